"""Report formats. ``report.json`` is the signed source of truth; the others render it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policies import Catalog

from ..signing import Signer
from .json_report import sign_report, write_json


def write_reports(report: dict[str, Any], out_dir: Path, signer: Signer, catalog: Catalog) -> dict[str, Path]:
    """Sign ``report`` and write every format into ``out_dir``."""
    signed = sign_report(report, signer)
    report.clear()
    report.update(signed)
    return {"json": write_json(signed, out_dir, signer)}
