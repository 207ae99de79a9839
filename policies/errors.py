"""Errors of the policy package, grouped by whose fault they are."""

from __future__ import annotations

from estate.errors import SkyddError


class PolicyError(SkyddError):
    """Root of every error raised by ``policies`` (bad catalog or profile input: exit 2)."""

    exit_code = 2


class CatalogError(PolicyError):
    """A control, framework or profile file is malformed (the author's fault)."""

    def __init__(self, path: str, key: str | None, problem: str) -> None:
        self.path, self.key, self.problem = path, key, problem
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(where + problem)


class EvidenceMissing(PolicyError):
    """An evidence path a check needs is absent: the check cannot decide (status ``error``)."""
