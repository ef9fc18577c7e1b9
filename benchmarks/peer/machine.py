"""How busy the machine is: this 2-core box is shared, and a benchmark run next to
another job measures the other job. Stdlib only (/proc)."""
from __future__ import annotations

import os
import threading
import time

HZ = os.sysconf("SC_CLK_TCK")
NUM_CPUS = os.cpu_count() or 1


def busy_s() -> float:
    """CPU-seconds all cores spent busy since boot (everything but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / HZ


def busy_fraction(window_s: float = 1.0) -> float:
    """Fraction of all cores busy over the next `window_s` (our own idle process included)."""
    start = busy_s()
    time.sleep(window_s)
    return (busy_s() - start) / (window_s * NUM_CPUS)


def wait_idle(threshold: float = 0.15, max_wait_s: float = 600.0, quiet_s: float = 2.0) -> float:
    """Block until the machine is under `threshold` busy for `quiet_s`, at most `max_wait_s`.
    Returns the busy fraction last seen (above `threshold` if we gave up)."""
    deadline = time.monotonic() + max_wait_s
    frac = busy_fraction(quiet_s)
    warned = False
    while frac > threshold and time.monotonic() < deadline:
        if not warned:
            print(f"  machine {100 * frac:.0f}% busy with other work; waiting (<= {max_wait_s:.0f} s)",
                  flush=True)
            warned = True
        frac = busy_fraction(quiet_s)
    return frac


class ForeignLoad:
    """Context manager: CPU-seconds used by processes OTHER than ours while it is open, as
    a fraction of the machine. Ours are this process and every descendant, sampled from
    /proc every `poll_s` by a thread (each process's last-seen CPU time counts), so
    grandchildren killed without being reaped (vLLM's engine-core workers at shutdown)
    still count as ours; a process loses at most its last `poll_s` of CPU.
    `own_pids` also counts those processes' trees (e.g. a server started outside the block)."""

    def __init__(self, own_pids: list[int] | None = None, poll_s: float = 0.5):
        self.own_pids, self.poll_s = own_pids or [], poll_s
        self._seen: dict[tuple[int, str], float] = {}
        self._stop = threading.Event()

    def _sample(self) -> None:
        for root in [os.getpid(), *self.own_pids]:
            for p in [root] + descendants(root):
                stat = _stat(p)
                if stat is not None and p != os.getpid():
                    self._seen[(p, stat[21])] = (int(stat[13]) + int(stat[14])) / HZ

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._sample()

    def _own_s(self) -> float:
        return sum(self._seen.values()) + time.process_time()

    def __enter__(self):
        self._sample()
        self.t0, self.busy0, self.own0 = time.monotonic(), busy_s(), self._own_s()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        wall = time.monotonic() - self.t0
        foreign = (busy_s() - self.busy0) - (self._own_s() - self.own0)
        self.fraction = max(0.0, foreign) / max(wall * NUM_CPUS, 1e-9)
        return False


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields, numbered as in proc(5) minus 1 (pid and comm first)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            head, tail = f.read().rsplit(")", 1)
    except (FileNotFoundError, ProcessLookupError):
        return None
    return [head.split(" (", 1)[0], head.split(" (", 1)[-1]] + tail.split()


def tree_cpu_s(pid: int) -> float:
    """CPU-seconds of `pid` and all its live descendants (utime + stime)."""
    total = 0.0
    for p in [pid] + descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / HZ
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                pass
    out, stack = [], [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out
