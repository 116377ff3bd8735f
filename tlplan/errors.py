"""Typed errors. The CLI maps each to an exit code in one place; library code only raises."""

from __future__ import annotations


class TlplanError(Exception):
    """Base of every error tlplan reports to a user: one line, what was wrong and what to do."""

    exit_code = 2


class BadInputError(TlplanError):
    """A malformed argument: size, resolution, scheme, model spec."""


class UnknownModelError(BadInputError):
    """A model name that is neither in the zoo nor a loadable ``package.module:factory``."""


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
