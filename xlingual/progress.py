"""Progress of a step that can take more than a few seconds: a tqdm bar on a terminal, plain lines elsewhere.

    for raw in progress(raws, desc="prepare train", unit="utt"):
        ...
    with progress(total=len(batches), desc="epoch 1/10", unit="batch") as bar:
        for batch in batches:
            ...
            bar.update()
            bar.set_postfix(loss=f"{loss:.3f}")

When the stream (stderr by default) is a terminal, this is a tqdm bar. When it is not (a log file, a pipe, a
SLURM output file), a bar's carriage-return redraws would fill the file, so the step writes one plain line when
it starts, one at most every `interval_s` seconds while it runs, and one when it ends.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Iterable, Iterator

INTERVAL_S = 30.0  # at most one line this often in a log: enough to see a step move, few enough to read
_now = time.monotonic  # the clock (replaced in tests)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True, file: IO[str] | None = None, interval_s: float = INTERVAL_S) -> "Progress":
    """A progress display for `iterable` (iterate over the result) or for `total` steps (call update()).

    Args:
        total: number of steps; default len(iterable) when it has one, else unknown (counts only).
        desc: what the step is, e.g. "prepare train"; starts every line.
        unit: what one step is ("utt", "batch"), shown after the counts.
        enabled: False shows nothing (e.g. on ranks > 0 of a distributed run, or when a config turns it off).
        file: the stream; default sys.stderr at the time of the call.
        interval_s: shortest time between two lines when the stream is not a terminal.
    Returns:
        a Progress: iterable, update(n), set_postfix(**values), close(); also a context manager.
    """
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    stream = sys.stderr if file is None else file
    if not enabled:
        return Progress(iterable, total)
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return _Bar(iterable, total, desc, unit, stream)
    return _Lines(iterable, total, desc, unit, stream, interval_s)


class Progress:
    """The interface (and the silent display): count steps, show values after the counts, close once."""

    def __init__(self, iterable: Iterable | None, total: int | None):
        self.iterable, self.total, self.n = iterable, total, 0
        self.postfix: dict[str, object] = {}
        self.closed = False

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("progress(total=...) is updated with update(), not iterated; pass an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values) -> None:
        """Values shown after the counts (e.g. kept=, skipped=, loss=); shown with the next line or redraw."""
        self.postfix.update(values)

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Bar(Progress):
    def __init__(self, iterable, total, desc, unit, stream):
        super().__init__(iterable, total)
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        super().update(n)
        self._bar.update(n)

    def set_postfix(self, **values) -> None:
        super().set_postfix(**values)
        self._bar.set_postfix(self.postfix, refresh=False)  # drawn with the next update, at tqdm's own pace

    def close(self) -> None:
        if not self.closed:
            self._bar.close()
        super().close()


class _Lines(Progress):
    def __init__(self, iterable, total, desc, unit, stream, interval_s):
        super().__init__(iterable, total)
        self.desc, self.unit, self.stream, self.interval_s = desc, unit, stream, interval_s
        self.start = self.last = _now()
        self._write(self._counts())

    def update(self, n: int = 1) -> None:
        super().update(n)
        now = _now()
        if now - self.last >= self.interval_s:
            self.last = now
            line = self._counts()
            elapsed = now - self.start
            if elapsed > 0 and self.n:
                rate = self.n / elapsed
                line += f", {rate:.3g}/s"
                if self.total:
                    line += f", {_duration((self.total - self.n) / rate)} left"
            self._write(line + self._postfix())

    def close(self) -> None:
        if not self.closed:
            unfinished = self.total is not None and self.n < self.total
            self._write(f"{self._counts()} {'stopped after' if unfinished else 'done in'} "
                        f"{_duration(_now() - self.start)}{self._postfix()}")
        super().close()

    def _counts(self) -> str:
        if self.total is None:
            return f"{self.desc}: {self.n} {self.unit}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        return f"{self.desc}: {self.n}/{self.total} {self.unit}{pct}"

    def _postfix(self) -> str:
        return "".join(f", {k}={v}" for k, v in self.postfix.items())

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    """'0 s', '42 s', '6 min 35 s', '2 h 05 min'."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
