"""tlplan beside TinyTL's Table 2 (ProxylessNAS-Mobile, batch 8), under TinyTL's convention.

The first of ``tinytl_tables.py``'s tables, alone (that script also prints Figure 3's resolution
sweep, Table 3 and the gradient-filter paper's memory rows, and says what each column is and how
the network is made to match the paper's).

Run by hand: ``.venv/bin/python benchmarks/tinytl_table2.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from tinytl_tables import main  # noqa: E402

if __name__ == "__main__":
    main(tables=("2",))
