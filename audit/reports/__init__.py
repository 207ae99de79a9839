"""Report formats. ``report.json`` is the signed source of truth; the others render it.

``write_reports`` signs first and renders HTML, OSCAL and JUnit from the signed dict, so no
format can say something the signed JSON does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policies import Catalog

from ..signing import Signer
from .html_report import render_html, write_html
from .json_report import sign_report, write_json
from .junit_report import render_junit, write_junit
from .oscal_report import build_oscal, write_oscal

__all__ = ["build_oscal", "render_html", "render_junit", "write_reports"]


def write_reports(report: dict[str, Any], out_dir: Path, signer: Signer, catalog: Catalog) -> dict[str, Path]:
    """Sign ``report`` (in place) and write every format into ``out_dir``."""
    signed = sign_report(report, signer)
    report.clear()
    report.update(signed)
    return {"json": write_json(signed, out_dir, signer),
            "html": write_html(signed, out_dir, catalog),
            "oscal": write_oscal(signed, out_dir),
            "junit": write_junit(signed, out_dir)}
