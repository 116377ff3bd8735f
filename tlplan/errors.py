"""Typed errors. The CLI maps each to an exit code in one place; library code only raises.

A message names the caller's arguments with ``arg("ram_bytes")``: a Python caller reads
``ram_bytes``, the command line reads the flag it gave (``--ram``), mapped in ``tlplan.cli``.
"""

from __future__ import annotations

import re
from typing import Mapping

_ARG = re.compile(r"\u27e8([A-Za-z_=]+)\u27e9")


def arg(name: str) -> str:
    """An argument of the Python API named in an error message (the CLI shows its flag instead)."""
    return f"\u27e8{name}\u27e9"


class TlplanError(Exception):
    """Base of every error tlplan reports to a user: one line, what was wrong and what to do."""

    exit_code = 2

    def __str__(self) -> str:
        return _ARG.sub(r"\1", super().__str__())

    def message_for(self, names: Mapping[str, str]) -> str:
        """The message with each argument as ``names`` calls it (the CLI: its flags)."""
        return _ARG.sub(lambda m: names.get(m.group(1), m.group(1)), super().__str__())


class BadInputError(TlplanError):
    """A malformed argument: size, resolution, scheme, model spec."""


class UnknownModelError(BadInputError):
    """A model name that is neither in the zoo nor a loadable ``package.module:factory``."""


class UntrustedModelError(UnknownModelError):
    """A file (a plan) names model code (``package.module:factory``) the user did not allow."""


class UnknownDeviceError(BadInputError):
    """A device name with no profile."""


class SchemeError(BadInputError):
    """A scheme that does not parse or does not fit the model."""


class TraceError(TlplanError):
    """The model could not be traced or run on the given input."""


class UnsupportedOpError(TlplanError):
    """An op with no cost rule, reported when ``strict`` is asked for."""


class CheckFailed(TlplanError):
    """A check did not pass (over budget, infeasible): exit 1."""

    exit_code = 1
