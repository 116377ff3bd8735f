"""Timing one layer configuration alone (the calibration op registry) and watching for a busy CPU."""

from __future__ import annotations

import time

from tlplan.measure.latency import time_passes
from tlplan.measure.load import LoadWindow, quiet, wait_until_quiet
from tlplan.measure.microbench import CALIBRATION_OPS, Config, time_config


def test_time_config_has_every_pass():
    entry = CALIBRATION_OPS["conv2d.pw"]
    m = time_config(entry, Config(1, 8, 6, 6, 16, 6, 6, bias=1), target_s=0.005, max_repeats=3)
    assert set(m.ms) == {"fwd", "fwd_nograd", "bwd_input", "bwd_weight", "bwd_bias", "bwd_input_weight", "bwd_input_bias"}
    assert all(v > 0 for v in m.ms.values())
    m = time_config(CALIBRATION_OPS["relu6"], Config(1, 8, 6, 6, 8, 6, 6, inplace=1), target_s=0.005, max_repeats=3)
    assert set(m.ms) == {"fwd", "fwd_nograd", "bwd_input"}


def test_every_registered_op_builds_and_runs():
    for entry in CALIBRATION_OPS:
        c = entry.conform(Config(2, 8, 6, 6, 8, 6, 6, k=3 if entry.name in ("conv2d", "conv2d.dw", "max_pool2d", "avg_pool2d") else 1,
                                 stride=1, groups=1, bias=1))
        if entry.name == "adaptive_avg_pool2d":
            c = entry.conform(Config(2, 8, 6, 6, 8, 1, 1))
        bench = entry.build(c)
        out = bench.fn(*[t.clone() for t in bench.inputs])
        assert out.numel() == c.numel_out, entry.name


def test_load_window_sees_no_foreign_load_in_a_sleep():
    window = LoadWindow().start()
    time.sleep(0.3)
    share = window.stop()
    assert share is None or 0.0 <= share <= 1.0
    assert quiet(None, 0.05) and quiet(0.01, 0.05) and not quiet(0.5, 0.05)


def test_time_passes_groups_share_one_graph():
    import torch

    w = torch.randn(4, 4, requires_grad=True)

    def prepare():
        x = torch.randn(2, 4, requires_grad=True)
        return (lambda: x @ w), [[x], [w]]

    fwd, bwd = time_passes(prepare, warmup=1, repeats=3)
    assert fwd > 0 and len(bwd) == 2 and all(b > 0 for b in bwd)
    assert time_passes(prepare, warmup=0, repeats=1)[1] != ()
    fwd_only = time_passes(lambda: ((lambda: w.sum()), []), warmup=0, repeats=2)
    assert fwd_only[1] == ()


def test_wait_until_quiet_gives_up_in_time():
    naps = []
    share = wait_until_quiet(-1.0, probe_s=0.0, max_wait_s=0.0, sleep=naps.append)  # never quiet enough
    assert len(naps) == 1 and (share is None or share >= 0)
