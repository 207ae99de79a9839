"""Errors of the audit package, grouped by whose fault they are."""

from __future__ import annotations

from estate.errors import SkyddError


class AuditError(SkyddError):
    """Root of every error raised by ``audit``."""


class VerificationError(AuditError):
    """A signature, report or log did not verify (tampering or the wrong key)."""


class BundleError(AuditError):
    """An evidence bundle is malformed (bad input)."""
