"""Atomic file writes, experiment-folder locks, and file names made from untrusted ids.

Every output is written under a temporary name, then renamed: a killed job leaves either the previous complete
file or the new complete file, never half of one. A write that fails (disk full, no permission) raises WriteError
naming the file, and the previous version of that file stays as it was.

Two runs writing the same experiment folder would interleave checkpoints and results; `exclusive_lock` refuses
the second one at once, with the folder and the PID of the run that holds it.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import inspect
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

try:
    import fcntl
except ImportError:  # not POSIX: folders are not locked
    fcntl = None

LOCK_FILE = ".lock"  # in every locked folder; only the flock on it matters, the file itself may stay
_TMP = re.compile(r"^\..+\.tmp(\d+)$")  # temporary names of atomic_path (and audio.save_audio): .<name>.tmp<pid>
_HINTS = {  # what to do about the usual causes of a failed write
    errno.ENOSPC: "the disk is full; free space and re-run (finished outputs are kept)",
    errno.EDQUOT: "the disk quota is exceeded; free space and re-run (finished outputs are kept)",
    errno.EFBIG: "the file is too large for this file system or process limit (ulimit -f)",
    errno.EACCES: "no permission to write there; fix the folder's permissions or choose another output folder",
    errno.EPERM: "no permission to write there; fix the folder's permissions or choose another output folder",
    errno.EROFS: "the file system is read-only; choose another output folder",
}


class WriteError(OSError):
    """An output that could not be written; the message names the file and what to do. `errno` is kept."""

    def __str__(self) -> str:
        return str(self.strerror)


class LockError(RuntimeError):
    """Another process is writing the same experiment folder."""


def file_in_the_way(folder: str | os.PathLike) -> Path | None:
    """The file that stops `folder` from being a folder: `folder` itself, or the nearest existing path above it,
    when that is not a folder; None when the folder exists or can be created there.

    mkdir's own errors name neither: "File exists" (the folder is a file) or "Not a directory" (a path above it is).
    """
    folder = Path(folder)
    for p in (folder, *folder.parents):
        if os.path.lexists(p):
            return None if p.is_dir() else p
    return None


def _not_a_folder(blocker: Path) -> str:
    return f"{blocker} is a file, not a folder; remove or rename that file, or choose another output folder"


def not_a_folder(folder: str | os.PathLike) -> str | None:
    """Why `folder` cannot be an output folder (a file is in the way), in words; None when it can be."""
    blocker = file_in_the_way(folder)
    return None if blocker is None else _not_a_folder(blocker)


def _write_error(path: Path, e: OSError) -> WriteError:
    if isinstance(e, WriteError):
        return e
    blocker = file_in_the_way(path.parent) if e.errno in (errno.ENOTDIR, errno.EEXIST) else None
    if blocker is not None:
        return WriteError(e.errno, f"cannot write {path}: {_not_a_folder(blocker)}")
    reason = e.strerror or str(e)
    return WriteError(e.errno, f"cannot write {path}: {reason}; {_HINTS.get(e.errno, 'fix the cause and re-run')}")


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    Raises:
        WriteError (an OSError) naming `path` when creating its folder, writing or renaming fails; the old
        `path`, if any, is untouched and the temporary file is removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise _write_error(path, e) from e
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------------------------------------------
# Locks

_held: dict[str, list] = {}  # resolved folder -> [lock file descriptor, depth]: the locks this process holds


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` may still write its files: it exists and is not a zombie.

    A killed worker whose parent died too stays a zombie for good where PID 1 does not reap orphans (many
    containers); `os.kill(pid, 0)` succeeds on a zombie, so its state is read from /proc where there is one.
    """
    if pid <= 0:
        return True  # not a process id: never treat its files as stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # alive (another user's), or not a process id
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]  # the name, in parentheses, may hold spaces
    except (OSError, IndexError):  # no /proc (macOS), or it ended just now: trust os.kill
        return True
    return state not in (b"Z", b"X")


def remove_stale_tmp(folder: str | os.PathLike, depth: int = 6) -> list[Path]:
    """Delete the temporary files (`.<name>.tmp<pid>`) that killed writers left in `folder` and below it.

    Only files of processes that no longer exist are removed; hidden folders (.git, .venv, .features) are not
    entered, nor anything deeper than `depth` levels. Call it while holding the folder's lock.
    """
    removed = []
    top = Path(folder)
    for root, dirs, files in os.walk(top):
        rel = Path(root).relative_to(top)
        dirs[:] = [] if len(rel.parts) >= depth else [d for d in dirs if not d.startswith(".")]
        for name in files:
            m = _TMP.match(name)
            if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
                try:
                    os.unlink(os.path.join(root, name))
                    removed.append(Path(root) / name)
                except OSError:
                    pass
    return removed


@contextmanager
def exclusive_lock(folder: str | os.PathLike):
    """Hold the lock of an experiment folder (fcntl.flock on `<folder>/.lock`) while the block runs.

    A second process asking for the same folder is refused at once with LockError naming the folder and the PID
    that holds it. The kernel drops the lock when its process ends, however it ends (SIGKILL included), so a
    killed run never leaves a stale lock. Re-entrant within a process: nested entry points (run_adapt -> adapt)
    share one lock. Once held, temporary files of killed writers in the folder are removed (remove_stale_tmp).

    Ranks other than 0 of a distributed run (environment RANK) do not lock: rank 0 holds the lock for the run.

    Raises:
        LockError: another process holds the lock.
        WriteError: the folder or its lock file cannot be created (ENOTDIR: a file is in the way, named).
    """
    folder = Path(folder)
    why = not_a_folder(folder)
    if why:  # checked on every rank: each would fail on its own, with mkdir's words
        raise WriteError(errno.ENOTDIR, f"cannot use {folder} as an output folder: {why}")
    if fcntl is None or os.environ.get("RANK", "0") != "0":
        yield folder
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        key = str(folder.resolve())
    except OSError as e:
        raise _write_error(folder / LOCK_FILE, e) from e
    if key in _held:
        _held[key][1] += 1
        try:
            yield folder
        finally:
            _held[key][1] -= 1
        return
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise _write_error(folder / LOCK_FILE, e) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise _write_error(folder / LOCK_FILE, e) from e
        who = f"PID {holder}" if holder.isdigit() else "another process"
        raise LockError(f"{folder} is in use by another xlingual run ({who}); two runs must not write the same "
                        f"folder. Wait for it to finish or stop it, or give this run another output folder")
    try:
        try:  # who holds it, for the message of a refused run (best effort: a full disk must not stop the run)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        _held[key] = [fd, 1]
        remove_stale_tmp(folder)
        yield folder
    finally:
        _held.pop(key, None)
        os.close(fd)  # releases the flock


def locked(folder: str | Callable[[dict], str | os.PathLike]):
    """Decorator: run the function holding exclusive_lock on the folder one of its arguments names.

    `folder` is an argument name ("out_dir"), an attribute path through one ("cfg.out_dir"), or a function of the
    bound arguments (name -> value) returning the folder.
    """
    def decorate(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            if callable(folder):
                where = folder(bound.arguments)
            else:
                name, *attrs = folder.split(".")
                where = bound.arguments[name]
                for a in attrs:
                    where = getattr(where, a)
            with exclusive_lock(where):
                return fn(*args, **kwargs)
        return wrapper
    return decorate


def safe_file_name(utt_id: str) -> str:
    """A file name for an utterance id; ids with other characters get a hash suffix to stay unique.

    One path component that cannot leave its folder ('/' and '\\' are replaced), never hidden (no leading '.', so
    '..' cannot name the parent) and short enough for any file system (long ids are cut, then hashed).
    """
    safe = re.sub(r"[^\w.-]", "_", utt_id)
    if safe.startswith(".") or not safe:
        safe = "_" + safe[1:]
    if len(safe.encode()) > 120:
        safe = safe[:40]
    return safe if safe == utt_id else f"{safe}-{hashlib.sha1(utt_id.encode()).hexdigest()[:8]}"
