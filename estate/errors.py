"""The root of Skydd's errors, grouped by whose fault they are. Every package's errors derive
from ``SkyddError``; ``exit_code`` is what the CLI returns for it."""

from __future__ import annotations


class SkyddError(Exception):
    """Root of Skydd's errors (exit 1 unless a subclass says otherwise)."""

    exit_code = 1


class InputError(SkyddError):
    """Bad input from the user: a file, a flag, a selection (exit 2)."""

    exit_code = 2
