"""Shared fixtures."""

from __future__ import annotations

import os
import sys

import pytest


def pytest_configure(config) -> None:
    """Under pytest-xdist (``-n 2``), one framework thread per worker: two workers on two cores run
    side by side instead of four threads contending for them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch):
    """Same output whatever the shell (or pytest-xdist's worker) sets: no forced colour, tables at
    the default width of a log, the shipped and user profiles only."""
    for var in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "TLPLAN_PROFILES",
                "GITHUB_STEP_SUMMARY",
                # PyTorch's cuBLAS settings, which size the workspaces a GPU peak counts
                "CUBLAS_WORKSPACE_CONFIG", "CUBLASLT_WORKSPACE_SIZE", "TORCH_CUBLASLT_UNIFIED_WORKSPACE",
                "DISABLE_ADDMM_CUDA_LT"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(autouse=True)
def own_user_profiles(monkeypatch, tmp_path_factory):
    """Every test sees an empty user profile folder: what a developer calibrated stays out of them."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("user-data")))


@pytest.fixture
def run(monkeypatch, capsys):
    """Run the ``tlplan`` command in-process: ``run(*args) -> (exit code, stdout, stderr)``.

    An exception escaping ``main()`` is what a user sees as a traceback and exit status 1, so it is
    turned into exactly that (the traceback appended to stderr) rather than erroring the test.
    """
    import traceback

    from tlplan.cli import main

    def _run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["tlplan", *args])
        tb = ""
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:  # noqa: BLE001 - the interpreter would print it and exit 1
            code, tb = 1, traceback.format_exc()
        out, err = capsys.readouterr()
        return code, out, err + tb

    return _run
