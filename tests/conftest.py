"""Shared fixtures."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def own_user_profiles(monkeypatch, tmp_path_factory):
    """Every test sees an empty user profile folder: what a developer calibrated stays out of them."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("user-data")))


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
