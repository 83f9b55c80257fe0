"""How many cores this process may give llama.cpp (and the e5 embedder): the free ones, now.

Shared by the in-process llamacpp backend, the llama-server child and synth/similarity/embedder.py.
"""

from __future__ import annotations

import os
import time
from typing import Callable

CpuTimes = Callable[[], "tuple[int, int, int] | None"]  # (free ticks, all ticks, cores counted), or None


def free_cores(sample: CpuTimes | None = None) -> int:
    """Every core no other work keeps busy now, at least one.

    llama.cpp's threads wait for each other at every step, so one thread on a core that
    another process holds stalls them all: on this 2-core machine with a load of about 8
    from other work, Qwen2.5-Coder-1.5B wrote 40 tokens in 62-109 s with 2 threads and in
    6-18 s with 1 (BENCHMARKS.md). On an idle machine this is every core. `sample` reads
    the CPU's ticks (default: `cpu_times` of /proc/stat).
    """
    cores = os.cpu_count() or 1
    return max(1, min(cores, round(cores - busy_cores(cores, sample=sample))))


def cpu_times(stat: str = "/proc/stat") -> tuple[int, int, int] | None:
    """(free ticks, all ticks, cores counted) from /proc/stat; None where there is none.
    Free: idle or waiting on I/O. Niced work counts as busy: it does not yield fast enough
    for llama.cpp's threads, which wait for each other at every step. Measured
    (benchmarks/contention.py, 1.5B tier, 8 slots): 2 threads beside two `nice -n 19` busy
    loops made 2.2 tokens/s against 15.7 idle; 1 thread made 11.2 beside them."""
    try:
        with open(stat) as handle:
            lines = handle.read().splitlines()
        ticks = [int(x) for x in lines[0].split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError, IndexError):
        return None
    counted = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    return ticks[3] + ticks[4], sum(ticks), counted


def busy_cores(cores: int, window_s: float = 0.3, sample: CpuTimes | None = None) -> float:
    """Cores busy right now: /proc/stat sampled over `window_s` where it counts these
    `cores` (a VM or a whole machine), else the 1-minute load average. The load average
    lags a minute: a build that had just ended made `make demo` run on one thread of an
    idle 2-core machine (load 0.59, round(2 - 0.59) = 1)."""
    sample = sample or cpu_times
    first = sample()
    if first is not None and first[2] == cores:
        time.sleep(window_s)
        second = sample()
        if second is not None and second[1] > first[1]:
            return cores * (1 - (second[0] - first[0]) / (second[1] - first[1]))
    try:
        return os.getloadavg()[0]
    except OSError:  # no load average on this platform either
        return 0.0
