"""A training step's peak as PyTorch's CUDA caching allocator counts it.

``torch.cuda.max_memory_allocated`` counts *blocks*, not the bytes tensors asked for. How the
allocator (c10/cuda/CUDACachingAllocator.cpp, default settings) turns a request of ``n`` bytes
into a block, in our words:

* a request is rounded up to a whole number of 512-byte units (and to 512 at least; a request
  of 0 bytes takes no block);
* a rounded request of at most 1 MiB is *small*: served from the small pool, whose segments the
  allocator takes from the driver 2 MiB at a time and cuts into blocks of exactly the rounded size;
* a larger one is *large*: below 10 MiB it is cut from a 20 MiB segment; from 10 MiB on it gets a
  segment of its own, its size rounded up to a whole number of 2 MiB. A large block is only split
  when more than 1 MiB would be left over, so a request of 10 MiB or more that falls less than
  1 MiB short of its 2 MiB multiple holds (and is counted as) the whole segment;
* a freed block stays in its pool (cached) for the next request of the same stream; reserved
  memory (``memory_reserved``) is the segments, which never shrink within a step.

cuBLAS's workspaces come from the same allocator and stay allocated once made
(aten/src/ATen/cuda/CublasHandlePool.cpp): one per cuBLAS handle and stream, and a handle per
thread. A training step runs its forward on the caller's thread and its backward on autograd's
own thread for the GPU, so a network whose forward and backward both multiply matrices holds two:
32 MiB each on Hopper and later GPUs, 8 MiB + 128 KiB on others (``CUBLAS_WORKSPACE_CONFIG`` sets
them). Up to PyTorch 2.11, cuBLASLt, which runs a linear layer's forward with its bias, keeps
1 MiB of its own beside them; later releases share cuBLAS's. ``blas_workspace_bytes`` counts them
by those rules; they are resident from the first step on.

``block_bytes`` is that rule for a request served from a fresh segment (what a first step does;
later steps reuse the same blocks); ``segment_bytes`` is the segment a request would open.

``cuda_breakdown`` turns the simulated timeline of ``tlplan.memory.timeline`` (exact tensor
bytes, CPU workspaces) into the GPU's: each parameter, buffer, gradient and optimizer-state tensor
and the input and labels counted as blocks; at each convolution's moments the CPU (oneDNN) layout
copies replaced by a cuDNN workspace term (``cudnn_workspace_bytes``); the optimizer's
temporaries those of PyTorch's multi-tensor (``foreach``) implementations, the default on CUDA.
Activations are counted at their exact bytes: a feature map is nearly always a multiple of 512
bytes already (at most 511 bytes off each).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import replace
from typing import Callable, Mapping

from .. import ops
from ..costs.annotate import ELEMENT_BYTES, CostTable
from ..plan.plan import Optimizer
from ..trace.graph import Layer
from .timeline import MemoryBreakdown

KIB, MIB = 1024, 1024 * 1024
MIN_BLOCK = 512  # every block is a whole number of these
SMALL_LIMIT = 1 * MIB  # the largest request the small pool serves
SMALL_SEGMENT = 2 * MIB  # what the small pool takes from the driver at a time
LARGE_SEGMENT = 20 * MIB  # the segment requests of 1 to 10 MiB are cut from
OWN_SEGMENT_FROM = 10 * MIB  # requests from here on get a segment of their own ...
OWN_SEGMENT_ROUND = 2 * MIB  # ... rounded up to a multiple of this
LARGE_SPLIT_ABOVE = 1 * MIB  # a large block is split only when more than this is left over


def rounded_bytes(n: int) -> int:
    """A request of ``n`` bytes rounded as the allocator rounds it (0 stays 0)."""
    if n <= 0:
        return 0
    return max(MIN_BLOCK, -(-n // MIN_BLOCK) * MIN_BLOCK)


def pool(n: int) -> str:
    """``small`` or ``large``: the pool a request of ``n`` bytes is served from."""
    return "small" if rounded_bytes(n) <= SMALL_LIMIT else "large"


def segment_bytes(n: int) -> int:
    """The segment the allocator would take from the driver for a request of ``n`` bytes."""
    size = rounded_bytes(n)
    if size == 0:
        return 0
    if size <= SMALL_LIMIT:
        return SMALL_SEGMENT
    if size < OWN_SEGMENT_FROM:
        return LARGE_SEGMENT
    return -(-size // OWN_SEGMENT_ROUND) * OWN_SEGMENT_ROUND


def block_bytes(n: int) -> int:
    """Bytes counted as allocated (``memory_allocated``) for a request of ``n`` bytes served from a
    fresh segment: the rounded request, or the whole segment where splitting it would leave 1 MiB
    or less (a request of 10 MiB or more)."""
    size = rounded_bytes(n)
    if size < OWN_SEGMENT_FROM:
        return size
    segment = segment_bytes(n)
    return segment if segment - size <= LARGE_SPLIT_ABOVE else size


def rounding_bytes(sizes) -> int:
    """What counting each of ``sizes`` as a block adds to their sum."""
    return sum(block_bytes(n) - n for n in sizes)


# ---- cuBLAS workspaces --------------------------------------------------------------------------

CUBLAS_LARGE_BYTES = 4096 * KIB * 8  # ":4096:8", PyTorch's default on Hopper and later
CUBLAS_OTHER_BYTES = 4096 * KIB * 2 + 16 * KIB * 8  # ":4096:2:16:8"
CUBLASLT_DEFAULT_BYTES = 1024 * KIB
#: the first PyTorch release whose defaults changed (PyTorch's CublasHandlePool.cpp, spring 2026):
#: 32 MiB on compute capability 9.x-12.x, not 9.0 alone; cuBLASLt reusing cuBLAS's workspace
#: (TORCH_CUBLASLT_UNIFIED_WORKSPACE on by default) instead of keeping 1 MiB of its own
NEWER_BLAS = (2, 12)


def parse_capability(text: "str | tuple[int, int] | None") -> tuple[int, int] | None:
    """``"8.7"`` (or ``(8, 7)``) as a tuple; None stays None. A malformed text is a ValueError."""
    if text is None or isinstance(text, tuple):
        return text
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(text))
    if not match:
        raise ValueError(f"compute capability {text!r} is not MAJOR.MINOR (e.g. 8.7)")
    return int(match.group(1)), int(match.group(2))


def torch_release(version: str | None = None) -> tuple[int, int]:
    """(major, minor) of a PyTorch version string (``"2.11.0+cu130"``); None: this PyTorch's."""
    if version is None:
        import torch

        version = torch.__version__
    match = re.match(r"\s*(\d+)\.(\d+)", str(version))
    return (int(match.group(1)), int(match.group(2))) if match else NEWER_BLAS


def _leading_int(text: str) -> int | None:
    """The digits a value starts with, as C++'s ``stoi`` reads them (``"2048KB"`` is 2048)."""
    match = re.match(r"\s*(\d+)", text or "")
    return int(match.group(1)) if match else None


def cublas_workspace_bytes(capability: tuple[int, int] | None, environ: Mapping[str, str] | None = None,
                           torch_version: str | None = None) -> int:
    """Bytes of one cuBLAS workspace (one per handle and stream) as PyTorch sizes it: the sum of
    SIZE KiB × COUNT over ``CUBLAS_WORKSPACE_CONFIG``'s ``:SIZE:COUNT`` pairs where set, else 32 MiB
    on compute capability 9.0 (PyTorch up to 2.11) or 9.x to 12.x (later releases), and 8 MiB +
    128 KiB on any other (None: such an other GPU, as the Jetsons up to Orin are)."""
    env = os.environ if environ is None else environ
    pairs = re.findall(r":([0-9]+):([0-9]+)", env.get("CUBLAS_WORKSPACE_CONFIG", "") or "")
    if pairs:
        return sum(int(size) * KIB * int(count) for size, count in pairs)
    if capability is None:
        return CUBLAS_OTHER_BYTES
    large = capability[0] in (9, 10, 11, 12) if torch_release(torch_version) >= NEWER_BLAS else capability == (9, 0)
    return CUBLAS_LARGE_BYTES if large else CUBLAS_OTHER_BYTES


def cublaslt_workspace_bytes(capability: tuple[int, int] | None, environ: Mapping[str, str] | None = None,
                             torch_version: str | None = None) -> int:
    """Bytes cuBLASLt keeps beside cuBLAS's workspace: up to PyTorch 2.11 a workspace of its own,
    ``CUBLASLT_WORKSPACE_SIZE`` KiB (default 1 MiB) capped at cuBLAS's size, unless
    ``TORCH_CUBLASLT_UNIFIED_WORKSPACE=1`` has it share cuBLAS's; in later releases sharing is the
    default, and ``TORCH_CUBLASLT_UNIFIED_WORKSPACE=0`` gives it one of its own again."""
    env = os.environ if environ is None else environ
    unified = (env.get("TORCH_CUBLASLT_UNIFIED_WORKSPACE", "") or "").strip()  # PyTorch reads "1" or "0"
    newer = torch_release(torch_version) >= NEWER_BLAS
    if unified == "1" or (newer and unified != "0"):
        return 0
    size = _leading_int(env.get("CUBLASLT_WORKSPACE_SIZE", "") or "")
    size = CUBLASLT_DEFAULT_BYTES if size is None else size * KIB
    if unified == "0":  # not capped at cuBLAS's size
        return size
    return min(size, cublas_workspace_bytes(capability, env, torch_version))


def _matmul_backward(layer: Layer, cost) -> bool:
    """Whether the layer's backward runs a matrix multiply (on cuBLAS): a linear layer computing its
    weight's or its input's gradient (a bias alone is a sum), or the tlplan runtime's gradient-filtered
    dense convolution (its patch products are ``einsum``s)."""
    state = cost.state
    work = "weight" in state.trained or state.needs_input_grad
    if ops.spec_of(layer).family == "linear":
        return work
    grouped = int(layer.attrs.get("groups", 1) or 1) != 1
    return ops.is_conv(layer) and not grouped and bool(getattr(state.options, "grad_filter", 0)) and work


def _uses_cublaslt(layer: Layer, environ: Mapping[str, str]) -> bool:
    """Whether PyTorch runs the linear layer's forward through cuBLASLt: ``addmm`` with a bias, more
    than one row, more than one input and output feature, and the path not turned off
    (``DISABLE_ADDMM_CUDA_LT=1``)."""
    if (environ.get("DISABLE_ADDMM_CUDA_LT", "") or "").strip() == "1":
        return False
    if not any(p.role == "bias" for p in layer.all_params) or not layer.input_shapes:
        return False
    shape = layer.input_shapes[0]
    return math.prod(shape[:-1]) > 1 and shape[-1] > 1 and layer.output_shape[-1] > 1


def blas_workspace_bytes(costs: CostTable, capability: tuple[int, int] | None,
                         environ: Mapping[str, str] | None = None, torch_version: str | None = None) -> int:
    """The cuBLAS(Lt) workspaces a training step of ``costs`` holds, as allocator blocks (see the
    module docstring): the forward thread's when any linear layer runs, cuBLASLt's when one runs
    through it, autograd's thread's when any layer's backward multiplies matrices."""
    env = os.environ if environ is None else environ
    pairs = list(zip(costs.graph.layers, costs.layers))
    linear = [layer for layer, _ in pairs if ops.spec_of(layer).family == "linear"]
    one = block_bytes(cublas_workspace_bytes(capability, env, torch_version))
    total = one if linear else 0
    if any(_uses_cublaslt(layer, env) for layer in linear):
        total += block_bytes(cublaslt_workspace_bytes(capability, env, torch_version))
    if any(_matmul_backward(layer, cost) for layer, cost in pairs):
        total += one
    return total


# ---- cuDNN workspace ------------------------------------------------------------------------------


def cudnn_workspace_bytes(layer: Layer, direction: str, element_bytes: int | None = None) -> int:
    """Bytes cuDNN's algorithm may take as workspace for a moment in ``direction`` (``forward`` or
    ``backward``) of a convolution; 0 for any other layer.

    An assumption until measured: cuDNN chooses, by its heuristics, among algorithms whose
    workspace ranges from none (implicit GEMM) to a lowered copy of the input (explicit GEMM).
    tlplan counts one image's lowered input (``c_in × k² × h_out × w_out`` elements) for a dense
    convolution with a kernel above 1×1, and nothing for 1×1, depthwise and grouped ones, which
    run without one; in the conv's own dtype (``element_bytes``: the layer's output's, unless
    given). ``benchmarks/cuda_check.py`` measures it on a GPU."""
    if not ops.is_conv(layer) or len(layer.input_shapes[0]) != 4 or len(layer.output_shape) != 4:
        return 0
    if element_bytes is None:
        element_bytes = layer.output_dtype_bytes
    groups = int(layer.attrs.get("groups", 1) or 1)
    kernel = layer.attrs.get("kernel_size") or (layer.params[0].shape[2:4] if layer.params else (1, 1))
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else (int(kernel[0]), int(kernel[-1]))
    if groups != 1 or kh * kw == 1:
        return 0
    c_in = layer.input_shapes[0][1]
    h_out, w_out = layer.output_shape[2], layer.output_shape[3]
    return c_in * kh * kw * h_out * w_out * element_bytes


Workspace = Callable[[Layer, str], int]


# ---- the step's timeline, as the allocator counts it ----------------------------------------------


def _buffer_sizes(layer: Layer) -> list[int]:
    """A layer's buffers as tensors: a norm's two running statistics and its step count (8 bytes)."""
    total = layer.buffer_bytes
    if total <= 0:
        return []
    if ops.is_norm(layer) and total > 8 and (total - 8) % 2 == 0:
        return [(total - 8) // 2, (total - 8) // 2, 8]
    return [total]


def _plain_conv(cost, runtime: str, precision: str) -> bool:
    """A conv whose CPU workspace rule is only oneDNN's layout copies (no runtime option's tensors)."""
    opts = cost.state.options
    if runtime == "eager":
        return True
    return not (getattr(opts, "grad_filter", 0) or 0 < getattr(opts, "weight", 1.0) < 1 or precision != "fp32")


def cuda_breakdown(costs: CostTable, memory: MemoryBreakdown, optimizer: Optimizer = Optimizer(),
                   workspace: Workspace | None = None, capability: tuple[int, int] | None = None,
                   torch_version: str | None = None) -> MemoryBreakdown:
    """``memory`` (``simulate_peak(costs, optimizer)``) as the CUDA caching allocator would count it
    (see the module docstring); ``workspace(layer, direction)``: the cuDNN term (default
    ``cudnn_workspace_bytes``); ``capability`` (the GPU's compute capability; None: one without
    PyTorch's larger default) and ``torch_version`` (None: this PyTorch's) size cuBLAS's workspaces.
    The mcu runtime's breakdown is returned as it is."""
    if costs.runtime == "mcu" or not memory.timeline:
        return memory
    graph = costs.graph
    element = ELEMENT_BYTES.get(costs.precision, 4)
    setting = ops.Setting(costs.runtime, element)
    workspace = workspace or (lambda layer, direction: cudnn_workspace_bytes(layer, direction))
    trained = costs.trainable
    params = [(layer.name, p.numel * p.dtype_bytes, p.name in trained) for layer in graph.layers for p in layer.params]
    trained_sizes = [n for _, n, t in params if t]
    resident_extra = rounding_bytes(n for _, n, _ in params)
    resident_extra += rounding_bytes(n for layer in graph.layers for n in _buffer_sizes(layer))
    resident_extra += rounding_bytes([memory.input_bytes]) + block_bytes(8 * graph.input_shape[0])  # the int64 labels
    resident_extra += optimizer.state_slots * rounding_bytes(trained_sizes)
    resident_extra += blas_workspace_bytes(costs, capability, torch_version=torch_version)  # kept from the first step
    if optimizer.name == "adam":  # its step count: a float tensor per parameter
        resident_extra += len(trained_sizes) * (block_bytes(4) - 4)
    grad_round = {name: 0 for name, _, _ in params}
    for name, n, t in params:
        if t:
            grad_round[name] += block_bytes(n) - n
    by_name = {layer.name: (layer, cost) for layer, cost in zip(graph.layers, costs.layers)}
    trained_blocks = sum(block_bytes(n) for n in trained_sizes)
    largest = max(trained_sizes, default=0)

    timeline: list[tuple[str, int]] = []
    held_grad_round = 0
    for where, now in memory.timeline:
        moment, _, name = where.partition(" ")
        extra = resident_extra
        if moment in ("forward", "backward") and name in by_name:
            layer, cost = by_name[name]
            spec = ops.spec_of(layer)
            if moment == "backward":
                held_grad_round += grad_round.get(name, 0)
                extra += held_grad_round
            if ops.is_conv(layer):
                cpu_ws = (spec.forward_workspace(layer, cost, setting) if moment == "forward"
                          else spec.backward_workspace(layer, cost, setting))
                if _plain_conv(cost, costs.runtime, costs.precision):
                    extra -= cpu_ws
                extra += block_bytes(workspace(layer, moment))
        elif where == "optimizer step":
            extra += sum(grad_round.values())
            cpu_temp = 2 * largest if optimizer.name == "adam" else 0
            extra += _foreach_temporaries(optimizer, trained_blocks) - cpu_temp
        timeline.append((where, now + extra))
    peak_at, peak = max(timeline, key=lambda moment: moment[1])
    start = memory.resident_bytes + resident_extra
    if start >= peak:
        peak_at, peak = "start", start
    return replace(memory, resident_bytes=start, peak_bytes=peak, peak_at=peak_at, timeline=tuple(timeline))


def _foreach_temporaries(optimizer: Optimizer, trained_blocks: int) -> int:
    """Bytes PyTorch's multi-tensor optimizers allocate for a moment in their step (CUDA's default):
    a copy of every gradient with weight decay added; Adam's square roots of its second moments."""
    temp = trained_blocks if optimizer.weight_decay else 0
    if optimizer.name == "adam":
        temp += trained_blocks
    return temp
