"""A PNG of the bytes each layer keeps for backward, stacked by kind, for a scheme against ``full``."""

from __future__ import annotations

from pathlib import Path

from ..profiling import ProfileReport
from .figure import pyplot, save_png

#: what a layer keeps, grouped for the picture
KINDS = {
    "input": "activations", "output": "activations", "input copy": "activations",
    "input channels": "input channels (partial weight)", "patch sums": "patch sums (gradient filter)",
    "mask": "1-bit masks", "stats": "norm statistics", "indices": "pool indices",
}


def _by_kind(report: ProfileReport) -> dict[str, list[float]]:
    """KB per layer for each kind; a shared tensor counts where the report counts it (first keeper)."""
    costs = report.costs
    series: dict[str, list[float]] = {}
    for i, cost in enumerate(costs.layers):
        shared = cost.saved_bytes - sum(t.private_bytes for t in cost.saved if t.value is None)
        parts: dict[str, float] = {"activations": shared}
        for t in cost.saved:
            if t.value is None:
                kind = KINDS.get(t.what, t.what)
                parts[kind] = parts.get(kind, 0) + t.private_bytes
        for kind in set(series) | set(parts):
            series.setdefault(kind, [0.0] * len(costs.layers))[i] = parts.get(kind, 0) / 1024
    return series


def plot_kept_bytes(report: ProfileReport, full: ProfileReport, path: Path) -> None:
    """Write the picture (PNG) atomically; ``full`` is the same model profiled under ``full``."""
    plt = pyplot()
    names = [row.name for row in report.layers]
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(max(8, len(names) * 0.12), 4.5), dpi=120)
    bottom = [0.0] * len(names)
    for kind, values in sorted(_by_kind(report).items()):
        if any(values):
            ax.bar(x, values, bottom=bottom, label=kind, width=0.85)
            bottom = [b + v for b, v in zip(bottom, values)]
    ax.step(x, [row.saved_bytes / 1024 for row in full.layers], where="mid", color="black", linewidth=0.8,
            label=f"full ({full.runtime})")
    ax.set_ylabel("kept for backward (KB = 1024 B)")
    ax.set_title(f"{report.model} {report.input_shape}: {report.scheme} vs full, {report.runtime} runtime "
                 f"({report.totals['saved_bytes'] / 1024:,.0f} KB vs {full.totals['saved_bytes'] / 1024:,.0f} KB; derived)")
    step = max(1, len(names) // 40)
    ax.set_xticks(list(x)[::step], names[::step], rotation=90, fontsize=6)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)
