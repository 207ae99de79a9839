"""The lab's error: a service could not be started, stopped or reached (exit 1)."""

from __future__ import annotations

from estate.errors import SkyddError


class LabError(SkyddError):
    """The local lab could not be started, stopped or reached (exit 1)."""
