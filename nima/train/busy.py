"""Whether other work keeps this machine's CPUs busy, for the thread-count hint `nima train` prints.

torch's intra-op threads split each op and wait for the slowest: on an idle 2-core machine two
threads train shakespeare-char 1.70x as fast as one, but with one core taken by another process
they run 2.07x slower than one (`bench/train_threads.py`). So the default stays torch's (all
cores), and a run that starts on busy CPUs is told how many threads the idle ones would carry.
"""

from __future__ import annotations

import time
from pathlib import Path

STAT = Path("/proc/stat")


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies over all CPUs from /proc/stat's first line; None where it is unreadable."""
    try:
        fields = [int(x) for x in STAT.read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return idle, sum(fields[:8])


def idle_cpus(cpus: int, window_s: float = 0.2) -> float | None:
    """How many of ``cpus`` sat idle over ``window_s`` seconds (Linux), or None where unknown."""
    before = _cpu_times()
    time.sleep(window_s)
    after = _cpu_times()
    if before is None or after is None or after[1] <= before[1]:
        return None
    return cpus * (after[0] - before[0]) / (after[1] - before[1])


def busy_hint(threads: int, idle: float | None) -> str | None:
    """The hint for ``threads`` torch threads when only ``idle`` CPUs are free, or None when they fit."""
    if idle is None or threads <= 1 or idle >= threads - 0.5:
        return None
    fit = max(1, int(idle + 0.5))
    return (
        f"only {idle:.1f} of the CPUs are idle and torch uses {threads} threads, which wait for the busiest core: "
        f"--set training.cpu_threads={fit} trains faster while other work runs"
    )
