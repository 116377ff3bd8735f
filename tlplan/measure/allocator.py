"""The memory allocator's settings under which tlplan times anything: freed memory stays in the process.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves every block above its
mmap threshold (128 KiB at start, raised as such blocks are freed, up to 32 MiB) with fresh pages
from the kernel and gives them back on ``free``, so most activations of a training step are
page-faulted in anew, step after step, at a cost that depends on the allocator's history. On
host-x86-2c the same step (mbv2-w0.35, ``full``, batch 4) took 25.7 to 40.3 ms across three builds
in one process, and 22.4 to 24.2 ms once freed memory was kept (``benchmarks/allocator_noise.py``).
A profile fitted on the first kind of timing predicts neither kind well.

``keep_freed_memory()`` fixes the threshold at its maximum and stops the heap from being trimmed,
so after a first step every step reuses memory the process already has. Calibration, evaluation,
``profile``'s measurements and ``train`` all time under it, so a measured profile's predictions and
the steps they are compared with run the same way. The peak a step allocates is unchanged (the
memory is reused, not added to); what changes is that the process keeps its peak until it exits.
Elsewhere than glibc (macOS, musl), or with ``TLPLAN_KEEP_FREED_MEMORY=0`` in the environment,
nothing is changed, and the settings returned say so (a calibrated profile records them).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from types import MappingProxyType
from typing import Mapping

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest: only blocks above it are mapped on their own
TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes an int: keep up to 2 GiB of free heap
TOP_PAD_BYTES = 256 * 1024 * 1024  # heap grown in large steps (address space only: untouched pages cost nothing)

_applied: Mapping[str, object] | None = None


def _mallopt():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.mallopt
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> Mapping[str, object]:
    """Set the allocator up as described in the module docstring (once per process); its settings."""
    global _applied
    if _applied is not None:
        return _applied
    if os.environ.get("TLPLAN_KEEP_FREED_MEMORY") == "0":
        _applied = MappingProxyType({"malloc": "system default (TLPLAN_KEEP_FREED_MEMORY=0)"})
        return _applied
    mallopt = _mallopt()
    if mallopt is None:
        _applied = MappingProxyType({"malloc": "system default (not glibc: left as it is)"})
        return _applied
    values = {"mmap_threshold_bytes": (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
              "trim_threshold_bytes": (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
              "top_pad_bytes": (_M_TOP_PAD, TOP_PAD_BYTES)}
    taken = {name: value for name, (param, value) in values.items() if mallopt(param, value) == 1}
    _applied = MappingProxyType({"malloc": "glibc, freed memory kept (tlplan.measure.allocator)", **taken})
    return _applied

