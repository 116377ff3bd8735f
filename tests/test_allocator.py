"""keep_freed_memory: freed tensors stay in the process (no page faults on the next step)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="the allocator settings are glibc's")

# a 16 MiB tensor: above glibc's starting mmap threshold (128 KiB), below the 32 MiB that tlplan sets
PROBE = """
import sys, torch
from tlplan.measure.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    print(dict(keep_freed_memory()), file=sys.stderr)
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
t = torch.ones(4 * 2**20)
before = rss()
del t
print(before - rss())
"""


def returned_bytes(mode: str, **env: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return int(out.stdout.strip())


@glibc
def test_freed_tensor_is_returned_by_default_and_kept_once_set():
    assert returned_bytes("default") >= 15 * 2**20  # munmap'd at once: the next step faults it in again
    assert returned_bytes("keep") < 2**20


@glibc
def test_environment_turns_it_off():
    assert returned_bytes("keep", TLPLAN_KEEP_FREED_MEMORY="0") >= 15 * 2**20


def test_settings_say_what_was_done(monkeypatch):
    from tlplan.measure import allocator

    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setenv("TLPLAN_KEEP_FREED_MEMORY", "0")
    assert allocator.keep_freed_memory()["malloc"] == "system default (TLPLAN_KEEP_FREED_MEMORY=0)"
    assert allocator.keep_freed_memory() is allocator.keep_freed_memory()  # once per process
