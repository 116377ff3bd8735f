"""Command line: the only place that imports typer or makes a rich Console."""

from .app import app, main

__all__ = ["app", "main"]
