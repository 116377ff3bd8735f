"""Measuring on this machine: timings per layer and per step, bytes kept, peaks, calibration ops.

Importing the package registers every calibration op: PyTorch's (``microbench``) and the tlplan
runtime's (``runtime_ops``, which builds on the former).
"""

from . import microbench, runtime_ops  # noqa: F401
