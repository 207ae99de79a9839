"""Skydd's control model, strict catalog loader and pure evaluation engine."""

from .engine import evaluate, exit_code, summarize
from .errors import CatalogError, EvidenceMissing, PolicyError
from .loader import Catalog, load_catalog, load_fixtures
from .model import Control, Evidence, Finding, Level, Remediation, Severity, Status, Waiver

__all__ = ["Catalog", "CatalogError", "Control", "Evidence", "EvidenceMissing", "Finding", "Level",
           "PolicyError", "Remediation", "Severity", "Status", "Waiver",
           "evaluate", "exit_code", "load_catalog", "load_fixtures", "summarize"]
