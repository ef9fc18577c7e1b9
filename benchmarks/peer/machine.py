"""How busy the machine is: this 2-core box is shared, and a benchmark run next to
another job measures the other job. Stdlib only (/proc/stat, getrusage)."""
from __future__ import annotations

import os
import resource
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
    """Context manager: CPU-seconds used by processes OTHER than our children while it is
    open, as a fraction of the machine. Our children's time comes from getrusage, so only
    children that exited inside the block count as ours (use it around subprocess.run);
    for a long-lived child pass `own_pids` and it reads their /proc/<pid>/stat instead."""

    def __init__(self, own_pids: list[int] | None = None):
        self.own_pids = own_pids

    def _own_s(self) -> float:
        if self.own_pids is None:
            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            me = resource.getrusage(resource.RUSAGE_SELF)
            return ru.ru_utime + ru.ru_stime + me.ru_utime + me.ru_stime
        return sum(tree_cpu_s(p) for p in self.own_pids) + time.process_time()

    def __enter__(self):
        self.t0, self.busy0, self.own0 = time.monotonic(), busy_s(), self._own_s()
        return self

    def __exit__(self, *exc):
        wall = time.monotonic() - self.t0
        foreign = (busy_s() - self.busy0) - (self._own_s() - self.own0)
        self.fraction = max(0.0, foreign) / max(wall * NUM_CPUS, 1e-9)
        return False


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
