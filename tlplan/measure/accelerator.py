"""Where tlplan times and measures: the CPU or a CUDA GPU, behind one small interface.

Every timing (``latency``, ``microbench``, calibration's steps) and every measured peak
(``peak``) runs through an ``Accelerator``: it places tensors (``device``), waits for queued work
(``synchronize``), hands out stopwatches (``timer``) and, on a GPU, reads the caching
allocator's peak (``reset_peak``, ``max_allocated_bytes``). The code that times is the same for
both; only these few calls differ:

* ``Cpu``: ``time.perf_counter`` around the call; nothing to wait for; no allocator statistics
  (the CPU peak comes from torch.profiler's memory events, ``tlplan.measure.peak``).
* ``Cuda``: CUDA events recorded on the current stream around the call, read once the stream
  is synchronised, so a timing is the GPU's time for the queued kernels and not the host's time
  to launch them; ``torch.cuda.reset_peak_memory_stats`` / ``max_memory_allocated``.

``select_accelerator("auto" | "cpu" | "cuda", model=..., device=...)`` chooses: ``auto`` is
cuda when the model's parameters are on a GPU, or the device profile was calibrated on cuda
(and this PyTorch can use CUDA); otherwise cpu. Asking for cuda where PyTorch has no CUDA is a
``BadInputError`` saying what to do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from ..errors import BadInputError, arg

ACCELERATORS = ("auto", "cpu", "cuda")


class Stopwatch(Protocol):
    """One timing: ``start()`` and ``stop()`` around the work; ``ms()`` once it has finished."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def ms(self) -> float: ...


@runtime_checkable
class Accelerator(Protocol):
    """What the timing and peak code needs of where it runs (see the module docstring)."""

    kind: str  # "cpu" or "cuda": recorded in reports and device profiles

    @property
    def name(self) -> str: ...  # the CPU's or the GPU's model name

    @property
    def device(self) -> torch.device: ...

    def synchronize(self) -> None: ...

    def timer(self) -> Stopwatch: ...

    def reset_peak(self) -> None: ...

    def max_allocated_bytes(self) -> int | None: ...  # None: this accelerator keeps no such statistic

    def allocated_bytes(self) -> int | None: ...


@dataclass
class _WallClock:
    """A stopwatch on the host's clock."""

    _t0: float = 0.0
    _ms: float = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        self._ms = (time.perf_counter() - self._t0) * 1e3

    def ms(self) -> float:
        return self._ms


def cpu_name() -> str:
    """This machine's CPU model, as the OS names it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Cpu:
    """The machine's CPU: host clock, nothing queued, no allocator statistics."""

    kind: str = field(default="cpu", init=False)

    @property
    def name(self) -> str:
        return cpu_name()

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def synchronize(self) -> None:
        return None

    def timer(self) -> Stopwatch:
        return _WallClock()

    def reset_peak(self) -> None:
        return None

    def max_allocated_bytes(self) -> int | None:
        return None

    def allocated_bytes(self) -> int | None:
        return None


@dataclass
class _CudaEvents:
    """A stopwatch of two CUDA events on the current stream; read after the stream finished them."""

    _start: Any = None
    _end: Any = None

    def start(self) -> None:
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)
        self._start.record()

    def stop(self) -> None:
        self._end.record()

    def ms(self) -> float:
        self._end.synchronize()
        return float(self._start.elapsed_time(self._end))


@dataclass(frozen=True)
class Cuda:
    """A CUDA GPU (``index``): CUDA events, stream synchronisation, the caching allocator's peak."""

    index: int = 0
    kind: str = field(default="cuda", init=False)

    @property
    def name(self) -> str:
        return torch.cuda.get_device_name(self.index)

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.index)

    @property
    def capability(self) -> tuple[int, int]:
        """The GPU's compute capability (major, minor): 9.0 for Hopper, 8.7 for a Jetson Orin."""
        major, minor = torch.cuda.get_device_capability(self.index)
        return int(major), int(minor)

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.index)

    def timer(self) -> Stopwatch:
        return _CudaEvents()

    def reset_peak(self) -> None:
        torch.cuda.synchronize(self.index)
        torch.cuda.reset_peak_memory_stats(self.index)

    def max_allocated_bytes(self) -> int | None:
        torch.cuda.synchronize(self.index)
        return int(torch.cuda.max_memory_allocated(self.index))

    def allocated_bytes(self) -> int | None:
        torch.cuda.synchronize(self.index)
        return int(torch.cuda.memory_allocated(self.index))


CPU = Cpu()


def cuda_usable() -> bool:
    """Whether this PyTorch was built with CUDA and sees a GPU."""
    return bool(torch.cuda.is_available())


def _no_cuda_error() -> BadInputError:
    build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}, but it sees no GPU"
    return BadInputError(f"{arg('accelerator')} cuda: this PyTorch ({torch.__version__}) is {build}; run on a machine with an "
                         f"NVIDIA GPU and a CUDA build of PyTorch, or use {arg('accelerator')} cpu")


def model_on_cuda(model: Any) -> int | None:
    """The GPU index the model's first parameter (or buffer) is on; None when on the CPU or no tensor."""
    if not isinstance(model, torch.nn.Module):
        return None
    import itertools

    t = next(itertools.chain(model.parameters(), model.buffers()), None)  # the first only: not every tensor
    if t is None or t.device.type != "cuda":
        return None
    return t.device.index or 0


def select_accelerator(requested: "str | Accelerator | None" = "auto", *, model: Any = None,
                       device: Any = None) -> Accelerator:
    """The accelerator to time and measure on.

    ``requested``: ``cpu``, ``cuda``, ``auto`` (None counts as auto), or an ``Accelerator`` (as it
    is). ``auto`` picks cuda when ``model``'s parameters are on a GPU, or the device profile
    ``device`` was calibrated on cuda and this PyTorch can use CUDA; otherwise the CPU.
    """
    if requested is None:
        requested = "auto"
    if not isinstance(requested, str):
        return requested
    wanted = requested.strip().lower()
    if wanted not in ACCELERATORS:
        raise BadInputError(f"unknown {arg('accelerator')} {requested!r}; use one of {', '.join(ACCELERATORS)}")
    if wanted == "cpu":
        return CPU
    on_gpu = model_on_cuda(model)
    if wanted == "cuda":
        if not cuda_usable():
            raise _no_cuda_error()
        return Cuda(on_gpu or 0)
    if on_gpu is not None:
        return Cuda(on_gpu)
    if getattr(device, "accelerator", "cpu") == "cuda" and cuda_usable():
        return Cuda(0)
    return CPU


def for_profile(device: Any) -> Accelerator:
    """The accelerator a measured profile was timed on, to time more against it (``--add``,
    ``--evaluate``); a GPU profile where PyTorch has no CUDA is a ``BadInputError`` saying so."""
    if getattr(device, "accelerator", "cpu") != "cuda":
        return CPU
    if not cuda_usable():
        gpu = getattr(device, "gpu", None) or "a GPU"
        raise BadInputError(f"profile {getattr(device, 'name', '?')} was timed on {gpu} (accelerator cuda): time against it "
                            f"where this PyTorch sees that GPU (this one, {torch.__version__}, sees none)")
    return Cuda(0)


def accelerator_kind(requested: "str | Accelerator | None" = "auto", *, model: Any = None, device: Any = None) -> str:
    """``cpu`` or ``cuda``: the accelerator a prediction is for, where nothing is measured (so no GPU
    is needed to predict a GPU's memory). ``auto`` as in ``select_accelerator``, without asking
    whether this PyTorch can use CUDA."""
    if requested is None:
        requested = "auto"
    if not isinstance(requested, str):
        return requested.kind
    wanted = requested.strip().lower()
    if wanted not in ACCELERATORS:
        raise BadInputError(f"unknown {arg('accelerator')} {requested!r}; use one of {', '.join(ACCELERATORS)}")
    if wanted != "auto":
        return wanted
    if model_on_cuda(model) is not None or getattr(device, "accelerator", "cpu") == "cuda":
        return "cuda"
    return "cpu"


def gpu_target(device: Any = None, accelerator: "Accelerator | None" = None,
               model: Any = None) -> tuple[tuple[int, int] | None, str | None, str]:
    """What a GPU peak is predicted for: the compute capability and the PyTorch version that size
    cuBLAS's workspaces, and where they come from, in words. The capability: the device profile's
    ``compute_capability`` (a Jetson's datasheet, a calibrated GPU's), else the GPU measured on
    (``accelerator``) or holding ``model``, else this machine's GPU, else None (a GPU without
    PyTorch's larger default, as edge GPUs are). The version: the PyTorch a calibrated profile was
    measured with (``framework.torch``), else this one (None)."""
    from ..memory.cuda import parse_capability

    torch_version = (getattr(device, "framework", None) or {}).get("torch")
    with_torch = f"PyTorch {torch_version or torch.__version__}"
    named = getattr(device, "compute_capability", None)
    if named:
        try:
            capability = parse_capability(named)
        except ValueError:
            raise BadInputError(f"device profile {getattr(device, 'name', '?')}: compute_capability must be MAJOR.MINOR "
                                f"(e.g. \"8.7\"), not {named!r}") from None
        return capability, torch_version, (f"compute capability {capability[0]}.{capability[1]}, from device profile "
                                           f"{getattr(device, 'name', '?')}; {with_torch}")
    index = getattr(accelerator, "index", None) if getattr(accelerator, "kind", "cpu") == "cuda" else model_on_cuda(model)
    if index is None and cuda_usable():
        index = torch.cuda.current_device()
    if index is None:
        return None, torch_version, (f"no GPU here and none named by a device profile: counted as a GPU without "
                                     f"PyTorch's larger default; {with_torch}")
    gpu = Cuda(index)
    major, minor = getattr(accelerator, "capability", None) or gpu.capability
    return (major, minor), torch_version, f"compute capability {major}.{minor}, from this machine's {gpu.name}; {with_torch}"


def placed(accelerator: Accelerator):
    """A context in which new tensors (parameters of modules built in it too) land on ``accelerator``;
    on the CPU, nothing (the default is the CPU already, and the CPU path stays as it was)."""
    from contextlib import nullcontext

    return nullcontext() if accelerator.kind == "cpu" else accelerator.device


def describe(accelerator: Accelerator, threads: int | None = None) -> str:
    """Where a measurement was taken, for a report: ``NVIDIA H200 (cuda)`` or ``AMD EPYC, 2 threads``."""
    if accelerator.kind == "cuda":
        return f"{accelerator.name} (cuda)"
    threads = torch.get_num_threads() if threads is None else threads
    return f"{accelerator.name}, {threads} thread{'s' if threads != 1 else ''}"
