"""``tlplan calibrate``: a complete profile, written atomically, resumable; the evaluation's figures."""

from __future__ import annotations

import functools
import json
import sys

import pytest

from tlplan.errors import BadInputError
from tlplan.predict import calibration
from tlplan.predict.calibration import Settings, calibrate
from tlplan.predict.devices import load_device
from tlplan.predict.store import read_layer_rows, read_step_rows

from profile_fixtures import write_profile

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

TINY = dict(budget_s=1.0, ops=("relu6", "add", "conv2d.pw"), networks=("mcunet-5fps",), step_schemes=("last",),
            step_batches=(1,), step_resolution=48, chunk_s=0.2, threshold=1.0, step_share=None)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("TLPLAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TLPLAN_PROFILES", str(tmp_path / "profiles"))
    # a fresh Python importing torch takes seconds: measured once in its own test below
    monkeypatch.setattr(calibration, "framework_overhead_bytes", lambda: 123 * 2**20)
    # the reference workload (speed index) is timed for real in its own test: here, a fake one
    from tlplan.predict import drift

    monkeypatch.setattr(drift, "_time_one", lambda op, config, statistic: {"fwd": 1.0, "bwd_input": 2.0})
    drift.clear_cache()


def test_calibrate_writes_a_complete_profile(tmp_path):
    root = tmp_path / "profiles"
    device = calibrate(Settings("tiny", **TINY), root=root)
    folder = root / "tiny"
    assert sorted(p.name for p in folder.iterdir()) == ["device.json", "measurements.csv", "steps.csv"]
    assert [p.name for p in root.iterdir()] == ["tiny"]  # no partial or temporary folder left behind
    assert device == load_device(folder / "device.json")
    assert device.source == "measured" and device.runtime_overhead_bytes == 123 * 2**20
    assert device.cores and device.threads and device.framework["torch"] and device.date
    assert device.allocator and device.allocator["malloc"]  # how malloc was set while timing
    rows = read_layer_rows(folder / "measurements.csv")
    assert {r.op for r in rows} == set(TINY["ops"])
    assert {r.pass_ for r in rows if r.op == "conv2d.pw"} >= {"fwd", "fwd_nograd", "bwd_input", "bwd_weight"}
    steps = read_step_rows(folder / "steps.csv")
    assert [(s.network, s.scheme, s.batch, s.resolution) for s in steps] == [("mcunet-5fps", "last", 1, 48)]
    assert device.calibration["rows"] == len(rows) and device.calibration["steps"] == 1


def test_budget_bounds_the_whole_step_list(tmp_path):
    # GIVEN 18 whole-step timings asked for (3 networks × 2 schemes × 3 rounds) and a 1-second budget
    settings = Settings("bounded", **{**TINY, "networks": ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3"),
                                      "step_schemes": ("last", "bias"), "step_share": 0.5})
    device = calibrate(settings, root=tmp_path / "profiles")
    # THEN the run stops timing steps at its budget (a step at least), still times every op once,
    # and writes a profile from what it has
    assert 1 <= len(read_step_rows(device.folder / "steps.csv")) < 6
    assert {r.op for r in read_layer_rows(device.folder / "measurements.csv")} == set(TINY["ops"])


def test_calibrate_resumes_after_an_interruption(tmp_path):
    root = tmp_path / "profiles"
    seen = []

    def interrupt(progress):
        seen.append(progress.phase)
        if progress.phase == "layers":
            raise KeyboardInterrupt  # as Ctrl-C would, after the first chunk of layers is saved

    with pytest.raises(KeyboardInterrupt):
        calibrate(Settings("tiny", **TINY), root=root, progress=interrupt)
    # THEN nothing looks like a profile yet, and what was measured is kept
    assert not (root / "tiny").exists()
    partial = root / ".tiny.partial"
    first_rows = read_layer_rows(partial / "measurements.csv")
    timings = read_step_rows(partial / "steps.csv")
    assert first_rows and len(timings) == Settings.step_rounds  # the one step, once per round
    first_elapsed = json.loads((partial / "state.json").read_text())["measured_s"]
    # a row cut short by the interruption is dropped, not an error
    with open(partial / "measurements.csv", "a") as f:
        f.write("relu6,fwd,1,8")
    # WHEN it runs again THEN it completes from there: steps not measured twice, old rows kept
    device = calibrate(Settings("tiny", **TINY), root=root)
    rows = read_layer_rows(root / "tiny" / "measurements.csv")
    assert rows[: len(first_rows)] == first_rows
    (step,) = read_step_rows(root / "tiny" / "steps.csv")  # the fastest of its rounds
    assert step.ms == min(t.ms for t in timings)
    assert not partial.exists()
    # it went on from the first run's measuring time (recorded to 0.1 s), within the budget's time
    assert device.calibration["elapsed_s"] >= round(first_elapsed, 1)


def test_calibrating_the_runtime_ops_times_runtime_steps_too(tmp_path, monkeypatch):
    from tlplan.measure.runtime_ops import RUNTIME_OPS

    root = tmp_path / "profiles"
    timed = []
    real_time_step = calibration.time_step

    def spy(*case, costs, statistic, **kw):
        timed.append((costs.runtime, statistic))
        return real_time_step(*case, costs=costs, statistic=statistic, **kw)

    monkeypatch.setattr(calibration, "time_step", spy)
    settings = Settings("tiny", **{**TINY, "ops": ("relu6", *RUNTIME_OPS)}, runtime_step_schemes=("bias",),
                        runtime_step_batches=(1,), statistic="median")
    calibrate(settings, root=root)
    steps = read_step_rows(root / "tiny" / "steps.csv")
    assert sorted((s.scheme, s.runtime) for s in steps) == [("bias", "tlplan"), ("last", "eager")]
    # each step run as its row says (the runtime's kernels swapped in), timed for the profile's statistic
    assert sorted(set(timed)) == [("eager", "median"), ("tlplan", "median")]
    # some of the runtime's ops only: no runtime steps (their other layers would be priced as PyTorch's)
    calibrate(Settings("tiny", **{**TINY, "ops": ("relu6", "relu6.mask")}), root=root)
    assert {s.runtime for s in read_step_rows(root / "tiny" / "steps.csv")} == {"eager"}


def test_steps_interrupted_between_rounds_resume_where_they_stopped(tmp_path):
    root = tmp_path / "profiles"
    settings = Settings("tiny", **{**TINY, "step_batches": (1, 2)})  # two steps, three rounds

    def interrupt(progress):
        if progress.phase == "steps" and progress.done == 3:  # round 2, its second step
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        calibrate(settings, root=root, progress=interrupt)
    assert len(read_step_rows(root / ".tiny.partial" / "steps.csv")) == 3  # round 1, and one step of round 2
    calibrate(settings, root=root)
    steps = read_step_rows(root / "tiny" / "steps.csv")
    assert sorted(s.batch for s in steps) == [1, 2]


def test_combine_steps_keeps_one_row_per_step():
    from tlplan.predict.store import StepRow

    rows = [StepRow("a", "last", 1, 48, ms, share) for ms, share in ((3.0, 0.0), (9.0, 0.02), (4.0, None))]
    rows.insert(1, StepRow("b", "full", 1, 48, 7.0, None))
    assert calibration.combine_steps(rows, "median") == [StepRow("a", "last", 1, 48, 4.0, 0.02),
                                                         StepRow("b", "full", 1, 48, 7.0, None)]
    assert calibration.combine_steps(rows, "min") == [StepRow("a", "last", 1, 48, 3.0, 0.02),
                                                      StepRow("b", "full", 1, 48, 7.0, None)]


def test_calibrate_times_with_the_threads_and_statistic_it_records(tmp_path, monkeypatch):
    import torch

    root = tmp_path / "profiles"
    before = torch.get_num_threads()
    seen = []
    real_time_config = calibration.time_config

    def spy(entry, config, **kw):
        seen.append((torch.get_num_threads(), kw.get("statistic")))
        return real_time_config(entry, config, **kw)

    monkeypatch.setattr(calibration, "time_config", spy)
    threads = before % 2 + 1  # not what torch runs now
    device = calibrate(Settings("tiny", **TINY, threads=threads), root=root)
    assert seen and set(seen) == {(threads, "min")}  # the default statistic: the fastest run
    assert (device.threads, device.statistic) == (threads, "min")
    assert f"{threads} framework thread" in device.description
    assert torch.get_num_threads() == before  # restored
    with pytest.raises(BadInputError, match="statistic"):
        Settings("tiny", **TINY, statistic="mean")
    with pytest.raises(BadInputError, match="--threads"):
        Settings("tiny", **TINY, threads=0)


def test_a_resumed_calibration_keeps_its_statistic(tmp_path):
    root = tmp_path / "profiles"

    def interrupt(progress):
        if progress.phase == "layers":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        calibrate(Settings("tiny", **TINY, statistic="median"), root=root, progress=interrupt)
    with pytest.raises(BadInputError, match="--statistic median"):
        calibrate(Settings("tiny", **TINY), root=root)
    assert calibrate(Settings("tiny", **TINY, statistic="median"), root=root).statistic == "median"


def test_recalibrating_replaces_the_profile_whole(tmp_path):
    root = tmp_path / "profiles"
    calibrate(Settings("tiny", **TINY), root=root)
    (root / "tiny" / "stray.txt").write_text("from before")
    calibrate(Settings("tiny", **{**TINY, "ops": ("add",)}), root=root)
    assert not (root / "tiny" / "stray.txt").exists()
    assert {r.op for r in read_layer_rows(root / "tiny" / "measurements.csv")} == {"add"}
    assert [p.name for p in root.iterdir()] == ["tiny"]


@pytest.mark.parametrize("name", ["", "Bad Name", ".hidden", "a/b"])
def test_calibrate_rejects_bad_names(name, tmp_path):
    with pytest.raises(BadInputError, match="profile name"):
        calibrate(Settings(name, **TINY), root=tmp_path)


def test_calibrate_cli(monkeypatch, capsys, tmp_path):
    from tlplan.cli import main

    monkeypatch.setattr(calibration, "Settings", functools.partial(
        Settings, step_schemes=("last",), step_batches=(1,), step_resolution=48, chunk_s=0.2))
    monkeypatch.setattr(sys, "argv", ["tlplan", "calibrate", "--name", "cli", "--budget-minutes", "0.01", "--ops",
                                      "add", "--networks", "mcunet-5fps", "--max-foreign-cpu", "1", "-q"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "measured here" in out and "tlplan calibrate --evaluate cli" in out
    assert load_device(tmp_path / "profiles" / "cli" / "device.json").source == "measured"
    # a datasheet profile cannot be evaluated against measurements: one line, exit 2
    monkeypatch.delenv("TLPLAN_PROFILES")
    monkeypatch.setattr(sys, "argv", ["tlplan", "calibrate", "--evaluate", "jetson-nano", "-q"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and "not a measured profile" in err[0]
    # --add and --evaluate time as the profile was: a thread count or statistic for them is an error
    for argv in (["--evaluate", "cli", "--threads", "1"], ["--name", "cli", "--add", "--statistic", "median"]):
        monkeypatch.setattr(sys, "argv", ["tlplan", "calibrate", *argv, "-q"])
        with pytest.raises(SystemExit) as info:
            main()
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and len(err) == 1 and "time as the profile was timed" in err[0]


def test_evaluation_figures_and_written_accuracy(tmp_path):
    from tlplan.predict.evaluate import EVALUATION_CSV, evaluate, write_accuracy

    # GIVEN a synthetic measured profile and step times "measured" for one network
    folder = write_profile(tmp_path / "profiles")
    device = load_device(folder / "device.json")
    cases = [("mcunet-5fps", s, 1, 128, "eager") for s in ("full", "last")]
    result = evaluate(device, networks=["mcunet-5fps"], schemes=("full", "last"), batches=(1,),
                      measured={cases[0]: 20.0, cases[1]: 5.0})
    # THEN each case is compared with a prediction made without the network's own rows
    assert [(c.network, c.scheme) for c in result.cases] == [("mcunet-5fps", "full"), ("mcunet-5fps", "last")]
    errors = [abs(c.predicted_ms / c.measured_ms - 1) for c in result.cases]
    assert result.overall["mape"] == pytest.approx(100 * sum(errors) / 2)
    assert result.overall["within_10"] == pytest.approx(100 * sum(e <= 0.1 for e in errors) / 2)
    assert set(result.per_network) == {"mcunet-5fps"}
    updated = write_accuracy(device, result)
    assert updated.accuracy["cases"] == 2 and updated.accuracy["per_network"]["mcunet-5fps"]["cases"] == 2
    assert "leave-one-network-out" in updated.accuracy["method"]
    assert (folder / EVALUATION_CSV).read_text().startswith("network,scheme,batch,resolution,runtime")
    assert updated.accuracy["per_runtime"] == {"eager": updated.accuracy["per_network"]["mcunet-5fps"]}
    assert json.loads((folder / "device.json").read_text())["accuracy"]["mape"] == updated.accuracy["mape"]


def test_evaluation_times_steps_as_the_profile_was_timed(tmp_path, monkeypatch):
    import dataclasses

    import torch

    from tlplan.predict import evaluate as evaluation

    folder = write_profile(tmp_path / "profiles")
    threads = torch.get_num_threads() % 2 + 1  # not what torch runs now
    device = dataclasses.replace(load_device(folder / "device.json"), threads=threads, statistic="min")
    seen = []
    timings = {1: iter([10.6, 10.0, 10.3]), 4: iter([21.0, 20.4, 20.0])}  # each batch's rounds, in turn

    def fake_time_step(network, scheme, batch, resolution, *, statistic, **kw):
        seen.append((torch.get_num_threads(), statistic))
        return next(timings[batch]), 0.0, 0.1

    monkeypatch.setattr(evaluation, "time_step", fake_time_step)
    before = torch.get_num_threads()
    result = evaluation.evaluate(device, networks=["mcunet-5fps"], schemes=("last",), batches=(1, 4), rounds=3,
                                 runtime_cases=False)
    assert set(seen) == {(threads, "min")} and torch.get_num_threads() == before
    assert {c.batch: c.measured_ms for c in result.cases} == {1: 10.0, 4: 20.0}  # the fastest of its rounds
    # the first two timings of each step, rounds apart, are the noise floor
    assert {c.batch: c.timings_ms for c in result.cases} == {1: (10.6, 10.0, 10.3), 4: (21.0, 20.4, 20.0)}
    errors = [abs(10.0 / 10.6 - 1), abs(20.4 / 21.0 - 1)]
    assert result.noise == pytest.approx({"mape": 100 * sum(errors) / 2, "within_10": 100.0, "cases": 2})
    assert result.accuracy_field()["noise_within_10"] == 100.0


def test_framework_overhead_is_measured_in_a_fresh_process(monkeypatch):
    monkeypatch.undo()
    rss = calibration.framework_overhead_bytes()
    assert 20 * 2**20 < rss < 4 * 2**30  # torch alone is tens to hundreds of MB


# --------------------------------------------------------------------------- speed index, quick adaptation, evaluation


def test_calibration_stores_a_speed_index_and_notes_a_speed_change(tmp_path, monkeypatch):
    import math
    import statistics

    from tlplan.predict import drift

    # the machine slows down through the run: each index 10 % slower than the one before
    factors: list[float] = []
    real_measure = drift.measure_index

    def measure(threads, statistic, **kw):
        factors.append(1.1 ** len(factors))
        return real_measure(threads, statistic, timer=lambda op, config, stat: {"fwd": factors[-1]}, **kw)

    monkeypatch.setattr(drift, "measure_index", measure)
    device = calibrate(Settings("tiny", **TINY), root=tmp_path / "profiles")
    index = drift.SpeedIndex.from_json(device.speed_index)
    assert len(index.entries) == len(drift.REFERENCE) and index.statistic == drift.INDEX_STATISTIC == "min"
    # the start, after the whole steps, at each later layer round, and the end: their median (of the logs)
    assert len(factors) >= 3
    median = math.exp(statistics.median(math.log(f) for f in factors))
    assert index.total_ms == pytest.approx(len(drift.REFERENCE) * median, rel=1e-4)
    assert device.calibration["speed_change"] == pytest.approx(factors[-1], rel=1e-4)
    assert "20 % slower at the end" in calibration.speed_change_note(1.2)
    assert calibration.speed_change_note(1.01) is None


def test_a_profiles_index_is_the_median_of_its_runs_indices():
    import math

    from tlplan.predict import drift

    def index(factor):
        return drift.measure_index(1, "min", timer=lambda op, config, stat: {"fwd": factor, "bwd_input": 2 * factor})

    run = [index(1.0), index(1.8), index(1.1), index(0.9), index(1.05)]  # one slow spell
    stored = drift.combined(run)
    assert stored.date == run[0].date and stored.statistic == "min"
    assert {e.pass_: round(e.ms / 1.05, 9) for e in stored.entries if e.op == "linear"} == {"fwd": 1.0, "bwd_input": 2.0}
    # the run's own variation: two robust standard deviations of the indices around that median;
    # the one index in a slow spell (1.8) does not set it
    assert stored.variation == pytest.approx(math.expm1(2 * 1.4826 * math.log(1.05)), rel=1e-6)
    assert stored.variation < 0.2
    assert drift.SpeedIndex.from_json(stored.to_json()).variation == pytest.approx(stored.variation, abs=1e-4)
    # two indices: their geometric mean
    assert drift.combined([index(1.0), index(1.44)]).total_ms == pytest.approx(index(1.2).total_ms)
    assert drift.combined([index(1.0)]).variation is None
    assert "'variation' must be 0 or more" == drift.check_index_field({**stored.to_json(), "variation": -0.1})
    assert "must be a finite number" in drift.check_index_field({**stored.to_json(), "variation": float("nan")})
    assert "must be a finite number" in drift.check_index_field({**stored.to_json(), "variation": True})


def test_a_resumed_run_combines_only_indices_timed_like_its_last(monkeypatch):
    from tlplan.predict import drift

    real_measure = drift.measure_index

    def index(factor, statistic):
        return real_measure(1, statistic, timer=lambda op, config, stat: {"fwd": factor})

    # a run begun before indices were timed by the fastest run: its opening index is a median's
    state = {"threads": 1, "statistic": "median", "speed_start": index(3.0, "median").to_json(),
             "speed_mid": [index(1.0, "min").to_json(), index(1.2, "min").to_json()]}
    monkeypatch.setattr(drift, "measure_index", lambda threads, statistic: index(1.1, statistic))
    stored, change = calibration.closing_index(state)
    assert stored.statistic == "min" and stored.total_ms == pytest.approx(len(drift.REFERENCE) * 1.1)
    assert change is None  # the start and the end were not timed alike


def test_the_reference_workload_is_timed_for_real(monkeypatch):
    monkeypatch.undo()  # the real timer
    from tlplan.predict import drift

    index = drift.measure_index(1, "min", rounds=1)
    assert {e.op for e in index.entries} == {op for op, _ in drift.REFERENCE}
    assert all(e.ms > 0 for e in index.entries) and index.threads == 1
    assert index.ratio_to(index) == 1.0


def _measured_base(root, name="base"):
    """The synthetic profile as measured on this machine (cpu, cores, threads, statistic)."""
    import os

    from tlplan.predict.devices import cpu_name

    folder = write_profile(root, name)
    data = json.loads((folder / "device.json").read_text())
    data.update(cpu=cpu_name(), cores=os.cpu_count() or 1, threads=1, statistic="min")
    (folder / "device.json").write_text(json.dumps(data))
    return load_device(folder / "device.json")


def test_quick_adaptation_writes_an_adapted_profile(tmp_path):
    from tlplan.predict import adapt
    from tlplan.predict.predictor import Pricer

    root = tmp_path / "profiles"
    _measured_base(root)
    phases = []
    result = adapt.quick(adapt.QuickSettings("fast", "base", budget_s=3.0, networks=("mcunet-5fps",), threshold=1.0),
                         root=root, progress=lambda p: phases.append(p.phase))
    device = result.device
    assert device.folder == root / "fast" and device.source == "measured"
    record = device.adapted
    assert record["from"] == "base" and record["networks"] == "mcunet-5fps" and record["budget_s"] == 3.0
    layers, steps = adapt.adaptation_rows(device)
    assert record["rows"] == len(layers) > 0 and record["steps"] == len(steps)
    assert record["configs"] == len({(r.op, r.config) for r in layers})
    assert {r.origin for r in layers} == {"mcunet-5fps"}
    assert record["default_scale"] > 0 and set(record["overhead_ms"]) == set(adapt.OVERHEAD_TERMS)
    assert device.speed_index and device.threads == 1 and device.statistic == "min"
    assert Pricer.of(device).source == "fitted on measurements, adapted from base"
    # BASE's data files are copied byte for byte (its cached fit serves the adapted profile)
    for name in ("measurements.csv", "steps.csv"):
        assert (root / "fast" / name).read_bytes() == (root / "base" / name).read_bytes()
    assert {"speed index", "steps", "layers", "fitting", "writing"} <= set(phases)


def test_quick_adaptation_stops_at_its_budget(tmp_path, monkeypatch):
    from tlplan.predict import adapt
    from tlplan.predict.predictor import Pricer

    root = tmp_path / "profiles"
    _measured_base(root)
    timed = []
    monkeypatch.setattr(adapt, "_time_candidate", lambda c, *a, **k: (timed.append(c) or [
        calibration.LayerRow(c.op, "fwd", c.config, c.origin, 0, 1.0, 0.0)], 0.1))
    monkeypatch.setattr(adapt, "time_step", lambda *a, **k: (10.0, 0.0, 0.1))
    ticks = iter(range(10**6))
    # a clock that moves one second a reading: the budget, 12 readings, runs out long before the
    # adaptation set does
    result = adapt.quick(adapt.QuickSettings("fast", "base", budget_s=12.0, networks=("mcunet-5fps",), threshold=1.0),
                         root=root, clock=lambda: float(next(ticks)))
    base = Pricer.of(load_device(root / "base" / "device.json"))
    candidates = adapt.informative_configs(("mcunet-5fps",), base, adapt.BATCHES, ("eager",))
    assert 0 < len(timed) < len(candidates) and result.record["configs"] == len(timed)
    assert result.record["elapsed_s"] <= 12.0


def test_quick_adaptation_times_steps_and_layers_in_slices(tmp_path, monkeypatch):
    from tlplan.predict import adapt, drift

    root = tmp_path / "profiles"
    _measured_base(root)
    events = []
    real_measure = drift.measure_index
    monkeypatch.setattr(adapt, "measure_index", lambda threads, statistic: (events.append("index") or real_measure(
        threads, statistic, timer=lambda op, config, stat: {"fwd": 1.0})))
    monkeypatch.setattr(adapt, "_time_candidate", lambda c, *a, **k: (events.append("layer") or [
        calibration.LayerRow(c.op, "fwd", c.config, c.origin, 0, 1.0, 0.0)], 0.1))
    monkeypatch.setattr(adapt, "time_step", lambda *a, **k: (events.append("step") or (10.0, 0.0, 0.1)))
    ticks = iter(range(10**6))  # one second a reading
    result = adapt.quick(adapt.QuickSettings("fast", "base", budget_s=180.0, networks=("mcunet-5fps", "mbv2-w0.35"),
                                             threshold=1.0), root=root, clock=lambda: float(next(ticks)))
    # three slices of a minute: an index opening each and one closing the run
    assert events.count("index") == 4 == result.record["speed_indices"] and events[0] == events[-1] == "index"
    slices = "".join(e[0] for e in events).split("i")[1:-1]
    assert len(slices) == 3
    # each slice times whole steps, then layer configurations: the two phases share the machine's moods
    assert [s.count("s") for s in slices] == [2, 1, 1]  # the four whole steps spread over them
    assert all(s.index("l") > s.rindex("s") for s in slices)
    assert result.record["elapsed_s"] <= 180.0
    # a budget longer than the work: the slices stop with it, no indices back to back
    events.clear()
    long = adapt.quick(adapt.QuickSettings("slow", "base", budget_s=3600.0, networks=("mcunet-5fps",), threshold=1.0),
                       root=root, clock=lambda: float(next(ticks)))
    slices = "".join(e[0] for e in events).split("i")[1:-1]
    assert long.record["speed_indices"] == events.count("index") == len(slices) + 1 < 60
    assert all(slices)  # each slice timed something


def test_an_evaluation_says_whether_it_scaled_for_drift():
    from rich.console import Console

    from tlplan.predict.drift import Drift
    from tlplan.predict.evaluate import Case, Evaluation
    from tlplan.report.devices import render_evaluation

    cases = (Case("net", "full", 1, 64, measured_ms=10.0, predicted_ms=9.0, runtime="eager", timings_ms=(10.0, 11.0)),)

    def text(*measured: float, variation: float | None = None) -> str:
        drifts = tuple(Drift("p", m, "", "", variation) for m in measured)
        console = Console(record=True, width=200)
        render_evaluation(Evaluation("p", cases, 1.0, ("networks outside the fit",), drifts=drifts), console)
        return console.export_text()

    mixed = text(1.02, 1.12)
    assert "drift-corrected: predicted times scaled by 1.12" in mixed
    assert "elsewhere, the reference workload took 1.02× its time" in mixed
    within = text(0.87, 0.9, variation=0.26)
    assert "took 0.87-0.90× its time at calibration; within ±26 %" in within and "not scaled" in within
    assert "drift-corrected" not in within
    scaled = text(1.18)
    assert "drift-corrected: predicted times scaled by 1.18" in scaled and "not scaled" not in scaled
    assert "drift" not in text()


def test_informative_configs_come_first(tmp_path):
    from tlplan.predict import adapt
    from tlplan.predict.predictor import Pricer

    device = _measured_base(tmp_path / "profiles")
    pricer = Pricer.of(device)
    chosen = adapt.informative_configs(("mcunet-5fps", "mbv2-w0.35"), pricer, (1,), ("eager",))
    assert len({(c.op, c.config) for c in chosen}) == len(chosen)  # each configuration once
    assert [c.origin for c in chosen[:4]] == ["mcunet-5fps", "mbv2-w0.35"] * 2  # taken in turn
    first = [c for c in chosen if c.origin == "mcunet-5fps"]
    assert first[0].share >= max(c.share for c in first[1:])  # the costliest layer first


@pytest.mark.parametrize("argv, message", [
    (["--quick", "--name", "x"], "--quick needs --from"),
    (["--from", "host-x86-2c-1t", "--name", "x"], "go with --quick"),
    (["--quick", "--from", "jetson-nano", "--name", "x"], "not a measured profile"),
    (["--quick", "--from", "host-x86-2c-1t", "--name", "x", "--budget-s", "0"], "--budget-s must be positive"),
    (["--quick", "--from", "host-x86-2c-1t", "--name", "x", "--evaluate", "y"], "do not go with it"),
])
def test_quick_cli_errors_are_one_line(argv, message, monkeypatch, capsys):
    from tlplan.cli import main

    monkeypatch.delenv("TLPLAN_PROFILES")
    monkeypatch.setattr(sys, "argv", ["tlplan", "calibrate", *argv, "-q"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and message in err[0]


def test_evaluating_networks_outside_the_fit_predicts_them_whole_and_interleaved(tmp_path, monkeypatch):
    from tlplan.predict import evaluate as evaluation
    from tlplan.predict.predictor import predict_latency

    device = _measured_base(tmp_path / "profiles")
    events = []
    timings = iter([10.0, 11.5, 9.0, 9.3, 9.1, 9.2])

    def fake_time_step(network, scheme, batch, resolution, **kw):
        events.append(("time", scheme))
        return next(timings), 0.0, 0.1

    def spy(graph, costs, pricer, **kw):
        events.append(("predict", costs))
        return predict_latency(graph, costs, pricer, **kw)

    monkeypatch.setattr(evaluation, "time_step", fake_time_step)
    monkeypatch.setattr(evaluation, "predict_latency", spy)
    result = evaluation.evaluate(device, networks=["mbv2-w0.35"], schemes=("last", "bias"), batches=(1,), rounds=2,
                                 runtime_cases=False, speed_index=False)
    assert result.held_out == ("networks outside the fit",)
    # each case predicted right before its first timing, in the same time window
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "predict" and kinds.count("predict") == 2 and kinds.index("predict", 1) < kinds.index("time", 2)
    # predicted by the whole profile (nothing of the network is in it to leave out)
    whole = {c.scheme: c.predicted_ms for c in result.cases}
    traced = evaluation.StepCases()
    for scheme in ("last", "bias"):
        costs = traced.costs("mbv2-w0.35", scheme, 1, 128)
        assert whole[scheme] == pytest.approx(predict_latency(costs.graph, costs, device).step_ms)
    noise = result.noise
    assert noise["cases"] == 2 and noise["within_10"] == 50.0  # one step moved 15 % between its timings


def test_an_adapted_profile_is_evaluated_on_networks_outside_its_fit(tmp_path):
    from tlplan.predict import adapt
    from tlplan.predict.evaluate import evaluate

    root = tmp_path / "profiles"
    _measured_base(root)
    device = adapt.quick(adapt.QuickSettings("fast", "base", budget_s=2.0, networks=("mcunet-5fps",), threshold=1.0),
                         root=root).device
    with pytest.raises(BadInputError, match="outside its fit"):
        evaluate(device, networks=["mcunet-5fps"], speed_index=False)


def test_a_scheme_that_does_not_apply_to_a_network_is_left_out(tmp_path, monkeypatch):
    from tlplan.predict import evaluate as evaluation

    device = _measured_base(tmp_path / "profiles")
    real_costs = evaluation.StepCases.costs

    def costs(self, network, scheme, *rest):
        if scheme == "blocks:3":
            raise BadInputError(f"scheme 'blocks:3': {network} has 0 blocks")
        return real_costs(self, network, scheme, *rest)

    monkeypatch.setattr(evaluation.StepCases, "costs", costs)
    monkeypatch.setattr(evaluation, "time_step", lambda *a, **k: (10.0, 0.0, 0.1))
    result = evaluation.evaluate(device, networks=["mbv2-w0.35"], schemes=("last", "blocks:3"), batches=(1,),
                                 runtime_cases=False, speed_index=False)
    assert [c.scheme for c in result.cases] == ["last"]
    assert len(result.skipped) == 1 and "0 blocks" in result.skipped[0]
