"""Errors of the application shell, grouped by whose fault they are."""

from __future__ import annotations


class SkyddError(Exception):
    """Root of the application's errors. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class InputError(SkyddError):
    """Bad input from the user: a file, a flag, a selection (exit 2)."""

    exit_code = 2


class LabError(SkyddError):
    """The local lab could not be started, stopped or reached (exit 1)."""
