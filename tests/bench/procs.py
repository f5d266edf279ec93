"""Servers the benchmark starts, and what /proc says about them.

Each server runs in a session (process group) of its own, pinned to the cores it is
given, and gets SIGTERM from Linux if the benchmark dies without stopping it. Every
process seen in a server's tree is remembered by pid and start time, so stopping it
ends exactly those processes and never a stranger that reused a pid (governor's
workers run in sessions of their own, outside the server's process group).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (field 3 onwards), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks after boot); None if gone or a zombie."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and fields[0] != "Z" else None


def _children() -> dict[int, list[int]]:
    """Every process's children, by parent pid."""
    kids: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                kids[int(fields[1])].append(int(entry.name))
    return kids


def tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    kids = _children()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(kids.get(pid, []))
    return found


def cpu_times(pids: Iterable[int]) -> tuple[float, float]:
    """User and system CPU time of ``pids`` (all their threads), in seconds."""
    user = system = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            user += int(fields[11])
            system += int(fields[12])
    return user / CLOCK_TICKS, system / CLOCK_TICKS


def rss_bytes(pids: Iterable[int]) -> int:
    """The sum of VmRSS over ``pids``."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def core_busy(core: int) -> tuple[int, int]:
    """(busy, total) jiffies of one core so far, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name == f"cpu{core}":
            numbers = [int(v) for v in values[:8]]
            idle = numbers[3] + numbers[4]  # idle + iowait
            return sum(numbers) - idle, sum(numbers)
    return 0, 0


def listeners(port: int) -> int:
    """How many sockets listen on 127.0.0.1:``port`` (SO_REUSEPORT workers count apiece)."""
    local = f"0100007F:{port:04X}"
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[1] == local and line.split()[3] == "0A")


def _child_setup(cpus: frozenset[int] | None) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


@dataclass
class Server:
    """One long-running program (nginx, haproxy, governor) in a session of its own."""

    name: str
    argv: list[str]
    log: Path
    cpus: frozenset[int] | None = None
    listeners: int = 1  # sockets that must listen on ``port`` before it counts as ready
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment
    _seen: dict[int, int] = field(default_factory=dict)  # pid -> start time

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_child_setup(self.cpus),
                env={**os.environ, **self.env},
            )

    def pids(self) -> list[int]:
        """The server's live process tree (remembered for :meth:`stop`)."""
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} is not running\n{self.log_tail()}")
        pids = tree(self.proc.pid)
        for pid in pids:
            start = _start_time(pid)
            if start is not None:
                self._seen.setdefault(pid, start)
        return pids

    def wait_ready(self, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        """Wait until the listeners are up and ``ready()`` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pids()  # raises if it died
            if listeners(self.port) >= self.listeners and ready():
                self.pids()  # remember the whole tree, workers included
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout}s\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(f"  {self.name}| {line}" for line in text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the group and wait; SIGKILL whatever of the tree is still there after."""
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(RuntimeError):
            self.pids()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        self._reap_strays(deadline=time.monotonic() + 5)

    def _ours(self) -> list[int]:
        return [pid for pid, start in self._seen.items() if _start_time(pid) == start]

    def _reap_strays(self, deadline: float) -> None:
        """Wait for the tree's other processes (own sessions) to exit; SIGKILL them at
        ``deadline``. Only processes whose pid and start time we saw are touched."""
        while self._ours() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self._ours():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
