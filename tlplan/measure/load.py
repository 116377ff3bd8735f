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
