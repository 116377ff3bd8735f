"""Is someone else using the CPU while we time? Other processes' share of the CPU over a window.

On a 2-core machine one busy neighbour halves the speed of every timing taken meanwhile. Timing
loops wrap their work in a ``LoadWindow`` and redo what ran while more than a small share of the
CPU went to other processes (or, on a virtual machine, was stolen by the host). Linux only
(``/proc/stat``); elsewhere the share is unknown (``None``) and nothing is redone.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: a window must span this many CPU ticks (all cores) before its share means anything
_MIN_TICKS = 20


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) ticks of all CPUs since boot; steal counts as busy (another VM had it)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def _own_ticks() -> float:
    t = os.times()
    return (t.user + t.system) * _TICK


@dataclass
class LoadWindow:
    """Measures what share of all CPUs other processes used between ``start()`` and ``stop()``."""

    _start: tuple[tuple[int, int] | None, float, float] | None = field(default=None, repr=False)
    share: float | None = None  # other processes' share of the CPUs; None when unknown
    wall_s: float = 0.0

    def start(self) -> "LoadWindow":
        self._start = (_cpu_ticks(), _own_ticks(), time.perf_counter())
        return self

    def stop(self) -> float | None:
        assert self._start is not None, "start() first"
        ticks0, own0, t0 = self._start
        ticks1, own1 = _cpu_ticks(), _own_ticks()
        self.wall_s = time.perf_counter() - t0
        if ticks0 is None or ticks1 is None or ticks1[1] - ticks0[1] < _MIN_TICKS:
            self.share = None
            return None
        busy = ticks1[0] - ticks0[0]
        total = ticks1[1] - ticks0[1]
        self.share = max(0.0, min(1.0, (busy - (own1 - own0)) / total))
        return self.share

    def __enter__(self) -> "LoadWindow":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def quiet(share: float | None, threshold: float) -> bool:
    """Whether a window's foreign share is low enough to trust its timings (unknown counts as quiet)."""
    return share is None or share <= threshold


def wait_until_quiet(threshold: float, *, probe_s: float = 0.25, max_wait_s: float = 600.0,
                     sleep=time.sleep) -> float | None:
    """Sleep in ``probe_s`` steps until other processes use at most ``threshold`` of the CPUs.

    Returns the last share seen (None where it cannot be known). Gives up after ``max_wait_s``
    and returns that share, so a busy machine slows calibration down but never stops it.
    """
    waited = 0.0
    while True:
        window = LoadWindow().start()
        sleep(probe_s)
        share = window.stop()
        if quiet(share, threshold) or waited >= max_wait_s:
            return share
        waited += probe_s


# ---- the machine's slow state: threads that take long to wake ----------------------------------------


def handoff_us(ops: int = 20, samples: int = 50) -> float:
    """Median µs of one tiny elementwise op split over all of the framework's threads.

    What it costs is mostly waking the other threads and waiting for them. On a virtual machine
    it has two levels: on host-x86-2c 4.6 µs most of the time, and 7 µs for seconds to minutes at
    a time, while every step with many small layers is slower too (mcunet-5fps, batch 1: 3.3 →
    4.7 ms) and a single thread's work is not. Nothing inside the machine shows it otherwise:
    the CPU share of other processes and the stolen time stay at zero.
    """
    import statistics

    import torch

    x = torch.randn(64, 1024)  # 64 Ki elements: large enough for the framework to split over its threads
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(ops):
            x.relu()
        times.append((time.perf_counter() - t0) / ops * 1e6)
    return statistics.median(times)


@dataclass
class Handoff:
    """Tells the machine's usual state from its slow one by ``handoff_us`` against the fastest seen.

    ``baseline_us`` starts at a profile's recorded value, if any, and follows the fastest reading
    since; a reading over ``slow_factor`` times it is the slow state (the two levels seen are
    1.5× apart; readings within a level, 5 %)."""

    baseline_us: float | None = None
    slow_factor: float = 1.2
    measure: Callable[[], float] = handoff_us
    slow_readings: int = 0  # how many readings found the slow state

    def usual(self) -> bool:
        us = self.measure()
        self.baseline_us = us if self.baseline_us is None else min(self.baseline_us, us)
        if us > self.slow_factor * self.baseline_us:
            self.slow_readings += 1
            return False
        return True

    def wait_until_usual(self, *, max_wait_s: float = 10.0, clock: Callable[[], float] = time.perf_counter) -> bool:
        """Read the gauge back to back until the usual state, at most ``max_wait_s``; whether it came.

        No sleeping in between: the readings keep the threads busy, and waits that slept through
        the slow state saw it last for minutes at a time."""
        start = clock()
        while not self.usual():
            if clock() - start >= max_wait_s:
                return False
        return True
