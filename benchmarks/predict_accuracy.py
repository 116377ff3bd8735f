"""Prediction speed, and the leave-one-network-out accuracy of a measured profile.

    .venv/bin/python benchmarks/predict_accuracy.py [PROFILE]             # speed + stored figures
    .venv/bin/python benchmarks/predict_accuracy.py [PROFILE] --evaluate  # re-measure and re-evaluate
                                                                           # (= tlplan calibrate --evaluate)

PROFILE defaults to host-x86-2c. Speed: the first prediction fits the profile (and caches the fit
under a fresh cache folder here); every later one loads the cached arrays and prices the layers.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time


def main(argv: list[str]) -> None:
    names = [a for a in argv if not a.startswith("--")]
    name = names[0] if names else "host-x86-2c"
    os.environ["TLPLAN_CACHE"] = tempfile.mkdtemp(prefix="tlplan-bench-cache-")

    import tlplan
    from tlplan.predict.devices import resolve_device
    from tlplan.predict.predictor import predict_latency, scheme_costs

    device = resolve_device(name)
    print(f"profile {device.name} ({device.source}): {device.description}")
    graphs = {}
    for model in tlplan.zoo_names():
        res = tlplan.default_resolution(model)
        graphs[model] = tlplan.trace_model(tlplan.load_model(model), (1, 3, res, res), model)
    first = next(iter(graphs.values()))
    t0 = time.perf_counter()
    predict_latency(first, scheme_costs(first, "full"), device)
    print(f"first prediction, fitting the profile and caching the fit: {time.perf_counter() - t0:.2f} s")
    print(f"\n{'model':22s} {'layers':>6s} {'predict (median of 5)':>22s} {'predicted step ms (full, b1)':>29s}")
    for model, graph in graphs.items():
        costs = scheme_costs(graph, "full")
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            p = predict_latency(graph, costs, device)
            times.append(time.perf_counter() - t0)
        print(f"{model:22s} {len(graph.layers):6d} {1e3 * statistics.median(times):19.1f} ms {p.step_ms:29.1f}")

    if "--evaluate" in argv:
        from tlplan.predict.evaluate import evaluate, write_accuracy

        device = write_accuracy(device, evaluate(device))
    acc = device.accuracy
    if not acc:
        print(f"\n{device.name} has not been evaluated: tlplan calibrate --evaluate {device.name}")
        return
    print(f"\nleave-one-network-out ({acc['date']}, {acc['seconds'] / 60:.1f} min): MAPE {acc['mape']:.2f}%, "
          f"{acc['within_10']:.1f}% of {acc['cases']} cases within ±10%")
    print(f"{'held-out network':22s} {'cases':>5s} {'MAPE %':>7s} {'within ±10%':>12s}")
    for net, f in acc["per_network"].items():
        print(f"{net:22s} {f['cases']:5.0f} {f['mape']:7.2f} {f['within_10']:11.0f}%")
    for runtime, f in acc.get("per_runtime", {}).items():
        print(f"{'all, ' + runtime + ' runtime':22s} {f['cases']:5.0f} {f['mape']:7.2f} {f['within_10']:11.0f}%")


if __name__ == "__main__":
    main(sys.argv[1:])
