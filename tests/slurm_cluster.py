"""A real single-node SLURM on this machine for the tests: munged, slurmctld and slurmd from Debian's `munge` and
`slurm-wlm`, configured in a temporary folder with this machine's CPUs and memory.

The SLURM executor (xlingual/cluster.py) is only really tested when a real scheduler sees its sbatch options, its
requeues and its cancellations; `start()` brings one up (or raises SlurmUnavailable with the reason it cannot:
not installed, not root, a daemon that does not come up) and `SlurmCluster.stop()` takes it down again.

Everything lives under one folder: munge's key and socket, slurm.conf, the daemons' state, spool and logs, and
the job completion log that `sacct --completion` reads (there is no accounting database: accounting_storage/none,
so plain `sacct` is unavailable, as on a cluster without slurmdbd). The daemons listen on free ports, so a SLURM
already running on the machine is left alone. No cgroups (proctrack/linuxproc, task/none): containers rarely
delegate them. The daemons run in the foreground as this process's children, so they are stopped by their PIDs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PARTITION = "xl"  # the one partition, the default
NODE = "xlnode"  # the one node (its NodeHostname is this machine's)
MAX_TIME = "12:00:00"  # the partition's time limit, as on many clusters
COMMANDS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo",
            "sacct")
HOST = socket.gethostname().split(".")[0]  # slurmctld checks SlurmctldHost against the short host name


class SlurmUnavailable(RuntimeError):
    """SLURM cannot run here; the message says why (the tests that need it are skipped with it)."""


@dataclass
class SlurmCluster:
    root: Path  # everything the cluster writes
    conf: Path  # slurm.conf; clients find it through SLURM_CONF
    cpus: int  # the node's CPUs and memory, as `slurmd -C` reported them
    mem_mb: int
    version: str  # e.g. "22.05.8"
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """The environment every SLURM client (and submitit, which calls them) needs to reach this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster; check=True raises with its stderr when it fails."""
        p = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode:
            raise RuntimeError(f"{' '.join(cmd)}: exit status {p.returncode}: {p.stderr.strip()}")
        return p

    def queue(self, finished: bool = False) -> dict[str, str]:
        """{job id: state} of the jobs plain `squeue` lists (pending, running, completing, ...); finished=True
        adds those that ended less than MinJobAge ago (COMPLETED, FAILED, CANCELLED, ...)."""
        out = self.run("squeue", "-h", *(("-t", "all") if finished else ()), "-o", "%i %T").stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def watch_queue(self, every: float = 0.5) -> QueueWatch:
        """A background poll of squeue (`with cluster.watch_queue() as seen:`): what the scheduler showed."""
        return QueueWatch(self, every)

    def completions(self, job_id: str) -> list[dict[str, str]]:
        """The job completion records of a job, oldest first (`sacct --completion`: one per end of the job, the
        end of an attempt that was requeued included): JobID, State, NodeList, ExitCode, Partition, Timelimit
        (minutes), Account, NCPUS."""
        fields = ("JobID", "State", "NodeList", "ExitCode", "Partition", "Timelimit", "Account", "NCPUS")
        out = self.run("sacct", "--completion", "--parsable2", "--noheader", "-o", ",".join(fields),
                       "-j", str(job_id)).stdout
        return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]

    def wait_for(self, what: str, predicate, timeout: float, every: float = 0.5):
        """Poll predicate() until it returns something true; raise TimeoutError naming `what` after `timeout` s."""
        end = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > end:
                raise TimeoutError(f"{what}: not after {timeout:.0f} s (logs in {self.root / 'log'})")
            time.sleep(every)

    def cancel_all(self, timeout: float = 60) -> None:
        """Cancel every job of this cluster and wait until none is pending, running or completing."""
        self.run("scancel", "--user", str(os.getuid()), check=False)
        self.wait_for("the queue empty after scancel", lambda: not self.queue() or None, timeout)

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of each daemon's log: what a skip reason or a failed wait should show."""
        parts = []
        for name in ("munged", "slurmctld", "slurmd"):
            path = self.root / "log" / f"{name}.log"
            if path.is_file():
                parts.append(f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)

    def stop(self, timeout: float = 30) -> None:
        """Cancel the jobs, then stop slurmd, slurmctld and munged (SIGTERM, SIGKILL after `timeout` s)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                self.cancel_all(timeout)
            except Exception:  # stopping must go on: the daemons are killed below either way
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout)


class QueueWatch:
    """Polls squeue in a thread while in its `with` block. `states[job]`: the job's states in the order seen
    (PENDING, RUNNING, ...); `fields[job]`: how squeue last showed its request (partition, cpus, min_memory,
    time_limit, account)."""

    FORMAT = ("id", "state", "partition", "cpus", "min_memory", "time_limit", "account")

    def __init__(self, cluster: SlurmCluster, every: float):
        self.cluster, self.every = cluster, every
        self.states: dict[str, list[str]] = {}
        self.fields: dict[str, dict[str, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            p = self.cluster.run("squeue", "-h", "-t", "all", "-o", "%i|%T|%P|%C|%m|%l|%a", check=False)
            for line in p.stdout.splitlines():
                row = dict(zip(self.FORMAT, line.split("|")))
                seen = self.states.setdefault(row["id"], [])
                if not seen or seen[-1] != row["state"]:
                    seen.append(row["state"])
                self.fields[row["id"]] = row
            self._stop.wait(self.every)

    def __enter__(self) -> QueueWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_config(env: dict) -> dict[str, str]:
    """`slurmd -C`: this machine's CPUs, sockets, cores, threads and RealMemory as SLURM sees them."""
    p = subprocess.run(["slurmd", "-C"], env=env, capture_output=True, text=True, timeout=30)
    if p.returncode:
        raise SlurmUnavailable(f"slurmd -C failed: {p.stderr.strip()}")
    first = p.stdout.splitlines()[0]
    return dict(kv.split("=", 1) for kv in first.split() if "=" in kv)


def write_config(root: Path, node: dict[str, str], munge_socket: Path) -> Path:
    """slurm.conf for one node, one partition, root as the SLURM user, no cgroups, no accounting database."""
    cpus, mem = int(node["CPUs"]), int(node["RealMemory"])
    lines = {
        "ClusterName": "xltest",
        "SlurmctldHost": f"{HOST}(127.0.0.1)",
        "SlurmctldPort": _free_port(),
        "SlurmdPort": _free_port(),
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "AuthType": "auth/munge",
        "CredType": "cred/munge",
        # cred_expire: a requeued job waits cred_expire + 1 s before it may start again (default 120; minimum 5)
        "AuthInfo": f"socket={munge_socket},cred_expire=5",
        "StateSaveLocation": root / "state",
        "SlurmdSpoolDir": root / "spool",
        "SlurmctldPidFile": root / "slurmctld.pid",
        "SlurmdPidFile": root / "slurmd.pid",
        "SlurmctldLogFile": root / "log" / "slurmctld.log",
        "SlurmdLogFile": root / "log" / "slurmd.log",
        "SlurmctldDebug": "info",
        "SlurmdDebug": "info",
        "ProctrackType": "proctrack/linuxproc",  # no cgroups in most containers
        "TaskPlugin": "task/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "AccountingStorageType": "accounting_storage/none",  # no slurmdbd: plain sacct is unavailable
        "JobCompType": "jobcomp/filetxt",  # ... but `sacct --completion` reads this file
        "JobCompLoc": root / "jobcomp.txt",
        "MpiDefault": "none",
        "ReturnToService": 2,
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core_Memory",
        "DefMemPerCPU": mem // cpus,  # without it a job would take the whole node's memory: one job at a time
        "SchedulerType": "sched/backfill",
        # the scheduler's passes every 5 s, not 60/30: a requeued job waits for a pass once it is eligible again
        "SchedulerParameters": "sched_interval=5,bf_interval=5",
        "MinJobAge": 5,  # finished jobs leave squeue after 5 s
        "KillWait": 5,  # SIGTERM to SIGKILL at a time limit or scancel
        "InactiveLimit": 0,
        "Waittime": 0,
    }
    text = "".join(f"{k}={v}\n" for k, v in lines.items())
    node_keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    text += (f"NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={HOST} "
             + " ".join(f"{k}={node[k]}" for k in node_keys if k in node) + " State=UNKNOWN\n")
    text += f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime={MAX_TIME} State=UP\n"
    conf = root / "slurm.conf"
    conf.write_text(text)
    return conf


def _die_with_us() -> None:
    """In the daemon, before exec: SIGKILL when the process that started it dies (Linux PR_SET_PDEATHSIG), so a
    killed test session leaves no daemons behind."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))
    except (OSError, AttributeError):
        pass


def _spawn(cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    # stdout/stderr of the daemon (beside its own log file): what it prints before its log is open
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True,  # a Ctrl-C meant for a test's child must not reach them
                                preexec_fn=_die_with_us)


def start(root: Path, timeout: float = 60) -> SlurmCluster:
    """Start munged, slurmctld and slurmd under `root`; return once the node is idle.

    Raises SlurmUnavailable (with the daemons' last log lines) when SLURM is not installed, this is not root,
    or a daemon does not come up within `timeout` seconds; whatever was started is stopped again.
    """
    missing = [c for c in COMMANDS if shutil.which(c) is None and not Path("/usr/sbin", c).is_file()]
    if missing:
        raise SlurmUnavailable(f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        raise SlurmUnavailable("slurmd must run as root to start jobs, and this is not root")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # munged refuses a socket folder others can write to
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(exist_ok=True)
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"}
    key, sock = root / "munge" / "munge.key", root / "munge" / "munge.sock"
    p = subprocess.run(["mungekey", "--create", f"--keyfile={key}"], capture_output=True, text=True, timeout=30,
                       env=env)
    if p.returncode:
        raise SlurmUnavailable(f"mungekey failed: {p.stderr.strip()}")
    node = _node_config(env)
    conf = write_config(root, node, sock)
    version = subprocess.run(["slurmd", "-V"], capture_output=True, text=True, env=env, timeout=30).stdout.split()[-1]
    cluster = SlurmCluster(root, conf, int(node["CPUs"]), int(node["RealMemory"]), version)
    logs = root / "log"
    try:
        cluster.procs["munged"] = _spawn(
            ["munged", "--foreground", f"--socket={sock}", f"--key-file={key}", f"--log-file={logs / 'munged.log'}",
             f"--pid-file={root / 'munge' / 'munged.pid'}", f"--seed-file={root / 'munge' / 'munged.seed'}"],
            logs / "munged.out", env)
        _wait_up(cluster, "munged", lambda: sock.exists(), timeout)
        env = {**env, "SLURM_CONF": str(conf)}
        cluster.procs["slurmctld"] = _spawn(["slurmctld", "-D", "-f", str(conf)], logs / "slurmctld.out", env)
        _wait_up(cluster, "slurmctld", lambda: cluster.run("scontrol", "ping", check=False).returncode == 0
                 and "UP" in cluster.run("scontrol", "ping", check=False).stdout, timeout)
        cluster.procs["slurmd"] = _spawn(["slurmd", "-D", "-f", str(conf), "-N", NODE], logs / "slurmd.out", env)
        _wait_up(cluster, f"node {NODE} idle", lambda: cluster.run(
            "sinfo", "-h", "-n", NODE, "-o", "%T", check=False).stdout.strip() == "idle", timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_up(cluster: SlurmCluster, what: str, predicate, timeout: float) -> None:
    """Poll predicate() until true; SlurmUnavailable, with the daemons' logs, if a daemon exits or time runs out."""

    def ready() -> bool:
        try:
            return bool(predicate())
        except (OSError, subprocess.TimeoutExpired):  # a client that cannot reach the daemon yet
            return False

    end = time.monotonic() + timeout
    while not ready():
        dead = [n for n, p in cluster.procs.items() if p.poll() is not None]
        if dead or time.monotonic() > end:
            why = f"{', '.join(dead)} exited" if dead else f"not within {timeout:.0f} s"
            raise SlurmUnavailable(f"{what}: {why}; logs in {cluster.root / 'log'}:\n{cluster.log_tail()}")
        time.sleep(0.2)
