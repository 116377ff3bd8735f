"""tlplan: what training a CNN costs on a small device, layer by layer, and what to train to fit.

Python API (the command line is a thin layer over it)::

    import tlplan
    model = tlplan.load_model("mcunet-5fps")
    report = tlplan.profile(model, (1, 3, 128, 128), scheme="bias")
    report.totals["saved_bytes"], report.to_dict()
"""

from .errors import TlplanError
from .plan.options import LayerOptions
from .plan.plan import Plan, load_plan
from .planning import plan_from_scheme
from .profiling import ProfileReport, profile
from .runtime import apply_plan
from . import solve  # the subpackage, callable as the solve function: tlplan.solve(model, shape, ram_bytes)
from .trace import LayerGraph, trace_model
from .zoo import default_resolution, load_model, zoo_names

__version__ = "0.1.0"

__all__ = [
    "LayerGraph",
    "LayerOptions",
    "Plan",
    "apply_plan",
    "load_plan",
    "plan_from_scheme",
    "solve",
    "ProfileReport",
    "TlplanError",
    "default_resolution",
    "load_model",
    "profile",
    "trace_model",
    "zoo_names",
    "__version__",
]
