"""Check tlplan's CUDA path on a GPU: measured against predicted, printed as ratios (10 s on an H200 with --quick).

Run on a machine with an NVIDIA GPU and a CUDA build of PyTorch:

    .venv/bin/python benchmarks/cuda_check.py [--quick] [--json FILE]

What it does, and what each line compares:

1. **Peaks, whole step.** For mcunet-5fps (batch 8, 128×128) and resnet18 (batch 8, 224×224), each
   under ``full`` and ``bias`` with the ``eager`` and ``tlplan`` runtimes: the predicted peak for
   cuda (``tlplan.profile(..., accelerator="cuda")``: the simulated timeline counted as the caching
   allocator counts blocks, with the cuDNN and cuBLAS workspace terms) against ``measure_peak`` on
   the GPU (``torch.cuda.max_memory_allocated`` over the second step). Ratios of the whole peak and
   of the step's part above what is resident (resident: parameters, buffers, the batch, cuBLAS's
   workspaces; the step's part: activations, gradients, cuDNN's workspaces).
2. **Peaks, layer by layer** (the same models, ``full``, eager): the allocator's peak while each
   module runs its forward (module hooks, ``reset_peak_memory_stats`` before each), and in the
   backward between the gradients of consecutive layers' outputs arriving (tensor hooks; the
   segment is labelled with the layer whose backward it mostly is), against the predicted
   timeline's moment of that layer. The allocator's statistics are kept on the host at each
   allocation, so no synchronisation is needed between layers.
3. **cuDNN workspace.** For a few convolutions of those models alone: what the allocator's peak
   rose above inputs, outputs and gradients in the forward and in the backward, against
   ``tlplan.memory.cuda.cudnn_workspace_bytes`` (an assumption until this runs).
4. **Timing.** ``tlplan.profile(measure=True, accelerator="cuda")`` on mcunet-5fps: the layers'
   forward and backward sums and the whole step (CUDA events after synchronisation).
5. **Calibration.** A few calibration samples timed with the CUDA stopwatch (``time_config``) and one
   whole step (``time_step``); then a tiny ``calibrate`` run (about 40 s) into a temporary folder,
   whose ``device.json`` must say ``accelerator: cuda`` and the GPU, and its prediction of a step
   against that step measured.

Nothing here is a test that fails: it prints what a person reads (and ``--json`` keeps it).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

MODELS = [("mcunet-5fps", (8, 3, 128, 128)), ("resnet18", (8, 3, 224, 224))]
SCHEMES = [("full", "eager"), ("bias", "eager"), ("full", "tlplan"), ("bias", "tlplan")]


def mib(n: float) -> str:
    return f"{n / 2**20:8.2f} MiB"


def ratio(measured: float, predicted: float) -> str:
    return f"{measured / predicted:6.3f}" if predicted else "   n/a"


def whole_step_peaks(gpu, results: dict) -> None:
    import tlplan
    from tlplan.measure.latency import prepared_copy
    from tlplan.measure.peak import measure_peak

    print("\n== peak of a training step: measured (cuda) / predicted (cuda) ==")
    print(f"{'model':14} {'scheme':6} {'runtime':7} {'predicted':>12} {'measured':>12} {'ratio':>6} "
          f"{'step pred.':>12} {'step meas.':>12} {'ratio':>6}  predicted peak at")
    for name, shape in MODELS:
        model = tlplan.load_model(name)
        for scheme, runtime in SCHEMES:
            report = tlplan.profile(model, shape, scheme=scheme, runtime=runtime, accelerator="cuda")
            run = prepared_copy(model, report.costs)
            torch.cuda.empty_cache()
            m = measure_peak(run, shape, accelerator=gpu)
            p = report.memory
            step_p, step_m = p.peak_bytes - p.resident_bytes, m.peak_bytes - m.resident_bytes
            print(f"{name:14} {scheme:6} {runtime:7} {mib(p.peak_bytes):>12} {mib(m.peak_bytes):>12} "
                  f"{ratio(m.peak_bytes, p.peak_bytes)} {mib(step_p):>12} {mib(step_m):>12} {ratio(step_m, step_p)}  {p.peak_at}")
            results.setdefault("peaks", []).append({
                "model": name, "scheme": scheme, "runtime": runtime, "predicted": p.peak_bytes, "measured": m.peak_bytes,
                "predicted_resident": p.resident_bytes, "measured_resident": m.resident_bytes})
            del run


def per_layer_peaks(gpu, results: dict) -> None:
    import tlplan
    from tlplan.measure.latency import prepared_copy

    print("\n== peak while each layer runs (eager, full): measured (cuda) / predicted (cuda) ==")
    for name, shape in MODELS:
        model = tlplan.load_model(name)
        report = tlplan.profile(model, shape, scheme="full", runtime="eager", accelerator="cuda")
        predicted = dict(report.memory.timeline)
        run = prepared_copy(model, report.costs).to(gpu.device).train()
        modules = dict(run.named_modules())
        names = [layer.name for layer in report.costs.graph.layers if layer.name in modules
                 and not list(modules[layer.name].children())]
        measured: dict[str, int] = {}
        handles = []

        def pre(module, args, label=None):
            torch.cuda.reset_peak_memory_stats(gpu.device)

        def post(module, args, output, label=None):
            measured[f"forward {label}"] = torch.cuda.max_memory_allocated(gpu.device)
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(lambda grad, label=label: backward_mark(label))

        following = {a: b for a, b in zip(names, names[1:])}

        def backward_mark(label: str) -> None:
            # the gradient of ``label``'s output has arrived: the segment since the previous mark was
            # mostly the backward of the layer after it
            consumer = following.get(label)
            if consumer is not None:
                measured[f"backward {consumer}"] = torch.cuda.max_memory_allocated(gpu.device)
            torch.cuda.reset_peak_memory_stats(gpu.device)

        for label in names:
            module = modules[label]
            handles.append(module.register_forward_pre_hook(lambda m, a, label=label: pre(m, a, label)))
            handles.append(module.register_forward_hook(lambda m, a, o, label=label: post(m, a, o, label)))
        x = torch.randn(shape, device=gpu.device)
        target = torch.zeros(shape[0], dtype=torch.long, device=gpu.device)
        trained = [p for p in run.parameters() if p.requires_grad]
        opt = torch.optim.SGD(trained, lr=0.01)
        for _ in range(2):  # the second step is the one read (blocks cached, as in measure_peak)
            measured.clear()
            out = run(x)
            loss = F.cross_entropy(out, target)
            torch.cuda.reset_peak_memory_stats(gpu.device)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        for h in handles:
            h.remove()
        print(f"-- {name} {shape}")
        print(f"{'moment':48} {'predicted':>12} {'measured':>12} {'ratio':>6}")
        rows = []
        for where, bytes_measured in measured.items():
            if where in predicted:
                rows.append((where, predicted[where], bytes_measured))
        for where, p, m in rows:
            print(f"{where[:48]:48} {mib(p):>12} {mib(m):>12} {ratio(m, p)}")
        ratios = sorted(m / p for _, p, m in rows if p)
        if ratios:
            print(f"   {len(ratios)} moments: median ratio {ratios[len(ratios) // 2]:.3f}, "
                  f"range {ratios[0]:.3f} – {ratios[-1]:.3f}")
        results.setdefault("layers", []).append({"model": name, "moments": [
            {"moment": w, "predicted": p, "measured": m} for w, p, m in rows]})
        del run


def workspace(gpu, results: dict) -> None:
    import tlplan
    from tlplan.memory.cuda import block_bytes, cudnn_workspace_bytes
    from tlplan.trace import trace_model

    print("\n== cuDNN workspace of single convolutions: measured / predicted ==")
    print(f"{'conv':40} {'pass':8} {'predicted':>12} {'measured':>12}")
    for name, shape in MODELS:
        model = tlplan.load_model(name)
        graph = trace_model(model, shape, name)
        modules = dict(model.named_modules())
        convs = [layer for layer in graph.layers if layer.op.startswith("conv") and layer.name in modules][:6]
        for layer in convs:
            conv = copy.deepcopy(modules[layer.name]).to(gpu.device)
            x = torch.randn(layer.input_shapes[0], device=gpu.device, requires_grad=True)
            for _ in range(2):  # the second run: cuDNN's choice made, blocks cached
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated(gpu.device)
                torch.cuda.reset_peak_memory_stats(gpu.device)
                out = conv(x)
                fwd = torch.cuda.max_memory_allocated(gpu.device) - base - block_bytes(out.numel() * out.element_size())
                grad = torch.randn_like(out)
                base = torch.cuda.memory_allocated(gpu.device)
                torch.cuda.reset_peak_memory_stats(gpu.device)
                out.backward(grad)
                made = sum(block_bytes(t.numel() * t.element_size()) for t in (x.grad, *[p.grad for p in conv.parameters()])
                           if t is not None)
                bwd = torch.cuda.max_memory_allocated(gpu.device) - base - made
                x.grad = None
                conv.zero_grad(set_to_none=True)
                del out, grad
            for direction, m in (("forward", fwd), ("backward", bwd)):
                p = cudnn_workspace_bytes(layer, direction)
                print(f"{(name + ' ' + layer.name)[:40]:40} {direction:8} {mib(p):>12} {mib(max(m, 0)):>12}")
                results.setdefault("workspace", []).append({"model": name, "layer": layer.name, "pass": direction,
                                                            "predicted": p, "measured": int(m)})


def timing(gpu, results: dict) -> None:
    import tlplan

    print("\n== timing on the GPU (CUDA events, after synchronisation) ==")
    model = tlplan.load_model("mcunet-5fps")
    t0 = time.perf_counter()
    report = tlplan.profile(model, (8, 3, 128, 128), scheme="bias", measure=True, repeats=3, accelerator="cuda")
    t = report.totals
    print(f"mcunet-5fps bias batch 8: step {t['measured_step_ms']:.3f} ms; layers alone: forward {t['latency_ms']['fwd']:.3f} ms, "
          f"backward {t['latency_ms']['bwd']:.3f} ms ({report.measured['host']}; {time.perf_counter() - t0:.0f} s)")
    results["timing"] = {"step_ms": t["measured_step_ms"], "layers": t["latency_ms"], "host": report.measured["host"]}


def calibration(gpu, results: dict, quick: bool) -> None:
    from tlplan.measure.microbench import CALIBRATION_OPS, Config, time_config
    from tlplan.predict import calibration as cal
    from tlplan.predict.predictor import StepCases, predict_latency

    print("\n== calibration samples timed with the CUDA stopwatch ==")
    samples = [("conv2d", Config(8, 64, 56, 56, 64, 56, 56, k=3, bias=0)),
               ("conv2d.dw", Config(8, 96, 32, 32, 96, 32, 32, k=3, groups=96)),
               ("conv2d.pw", Config(8, 96, 32, 32, 24, 32, 32)),
               ("relu6", Config(8, 96, 32, 32, 96, 32, 32)),
               ("conv2d.tl", Config(8, 64, 56, 56, 64, 56, 56, k=3, bias=1))]
    for op, config in samples:
        config = CALIBRATION_OPS[op].conform(config)
        m = time_config(CALIBRATION_OPS[op], config, statistic="min", accelerator=gpu)
        print(f"{op:10} " + ", ".join(f"{k} {v:.4f} ms" for k, v in m.ms.items()))
    ms, _, _ = cal.time_step("mcunet-5fps", "full", 8, 128, threshold=1.0, statistic="min", accelerator=gpu)
    print(f"whole step mcunet-5fps full batch 8: {ms:.3f} ms")
    if quick:
        return
    with tempfile.TemporaryDirectory() as root:
        settings = cal.Settings("cuda-check", budget_s=40.0, ops=("conv2d", "conv2d.dw", "conv2d.pw", "relu6", "add",
                                                                   "batch_norm", "adaptive_avg_pool2d", "linear", "view"),
                                networks=("mcunet-5fps",), step_schemes=("full", "last"), step_batches=(1, 8),
                                threshold=1.0, accelerator="cuda")
        t0 = time.perf_counter()
        device = cal.calibrate(settings, root=Path(root))
        data = json.loads((Path(root) / "cuda-check" / "device.json").read_text())
        print(f"calibrated in {time.perf_counter() - t0:.0f} s: accelerator {data['accelerator']}, gpu {data.get('gpu')}, "
              f"{data['calibration']['configs']} configurations, {data['calibration']['steps']} steps")
        costs = StepCases().costs("mcunet-5fps", "full", 4, 128)
        predicted = predict_latency(costs.graph, costs, device).step_ms
        measured, _, _ = cal.time_step("mcunet-5fps", "full", 4, 128, threshold=1.0, statistic="min", accelerator=gpu)
        print(f"mcunet-5fps full batch 4 (not in the fit): measured {measured:.3f} ms, predicted {predicted:.3f} ms, "
              f"measured/predicted {measured / predicted:.3f}")
        results["calibration"] = {"accelerator": data["accelerator"], "gpu": data.get("gpu"),
                                  "measured_ms": measured, "predicted_ms": predicted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the tiny calibration run (about 40 s)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU visible to this PyTorch: run this on a machine with one (and a CUDA build of PyTorch)")
    from tlplan.measure.accelerator import select_accelerator

    gpu = select_accelerator("cuda")
    print(f"{gpu.name}, torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    results: dict = {"gpu": gpu.name, "torch": torch.__version__}
    t0 = time.perf_counter()
    for part in (whole_step_peaks, per_layer_peaks, workspace, timing):
        part(gpu, results)
    calibration(gpu, results, args.quick)
    print(f"\ndone in {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
