"""tlplan beside TinyTL's Table 2 (ProxylessNAS-Mobile, 224x224, batch 8), under TinyTL's convention.

TinyTL (Cai et al., NeurIPS 2020) reports training memory as model size (frozen weights 8-bit,
trained 32-bit) plus peak activation. tlplan's ``memory.tinytl_bytes`` is that figure, derived
from its simulated timeline on the tlplan runtime (1-bit ReLU masks, as TinyTL counts them).

Run by hand: ``.venv/bin/python benchmarks/tinytl_table2.py``. Prints one row per method: the
paper's figure, tlplan's, their ratio, and tlplan's own predicted peak for the same scheme.
"""

from __future__ import annotations

import tlplan

MB = 2**20
#: TinyTL Table 2, ProxylessNAS-Mobile at 224, batch 8 (MB, as published)
#: (lite: TinyTL-L, lite+bias: TinyTL-L+B; tlplan puts a branch in every block the model declares)
PUBLISHED = {"full": 391, "last": 31, "bias": 32, "norm+last": 192, "lite": 37, "lite+bias": 37}


def main() -> None:
    model = tlplan.load_model("proxylessnas_mobile")
    shape = (8, 3, 224, 224)
    print(f"{'method':<12} {'paper MB':>9} {'tlplan MB':>10} {'ratio':>6} {'model MB':>9} {'activation MB':>14} {'tlplan peak MB':>15}")
    for scheme, paper in PUBLISHED.items():
        m = tlplan.profile(model, shape, scheme=scheme).memory
        ours = m.tinytl_bytes / MB
        print(f"{scheme:<12} {paper:>9} {ours:>10.1f} {ours / paper:>6.2f} {(m.tinytl_bytes - m.activation_peak_bytes) / MB:>9.1f} "
              f"{m.activation_peak_bytes / MB:>14.1f} {m.peak_bytes / MB:>15.1f}")


if __name__ == "__main__":
    main()
