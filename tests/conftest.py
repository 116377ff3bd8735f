"""Shared fixtures."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture
def run(monkeypatch, capsys):
    """Run the ``tlplan`` command in-process: ``run(*args) -> (exit code, stdout, stderr)``."""
    from tlplan.cli import main

    def _run(*args):
        monkeypatch.setattr(sys, "argv", ["tlplan", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        out, err = capsys.readouterr()
        return code, out, err

    return _run
