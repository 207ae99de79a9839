"""``report.html``: one self-contained page for the security officer, rendered from the signed
report with Jinja2 (autoescape on). No external requests: CSS is inline, there are no scripts,
images or links off the page."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from policies import Catalog

from . import view
from .output import atomic_write

TEMPLATE = "report.html.j2"


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("audit.reports", "templates"),
                      autoescape=select_autoescape(["html", "j2"], default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pretty"] = _pretty
    return env


def _pretty(value: Any) -> str:
    """Observed values as indented JSON (escaped by the template like any other text)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def render_html(report: Mapping[str, Any], catalog: Catalog) -> str:
    findings = view.findings_of(report)
    drift = report.get("drift") or {}
    titles = view.titles(findings)
    status_of = {(f["control"], f["target"]): f["status"] for f in findings}
    changes = {(t["control"], t["target"]): t for t in drift.get("transitions", [])}
    signature = report.get("signature") or {}
    return _environment().get_template(TEMPLATE).render(
        report=report,
        overall=report["summary"]["status"],
        overall_label=view.OVERALL_LABELS.get(report["summary"]["status"], ("?", "?")),
        key_id=signature.get("key_id", "(unsigned)"),
        matrix=view.matrix(findings),
        statuses=view.STATUS_ORDER,
        status_labels={s.value: v for s, v in view.STATUS_LABELS.items()},
        groups=view.attention(findings),
        waivers=view.waivers(findings),
        previous=drift.get("previous"),
        newly_failing=[_change(d, changes, titles, status_of) for d in drift.get("newly_failing", [])],
        newly_fixed=[_change(d, changes, titles, status_of) for d in drift.get("newly_fixed", [])],
        references=lambda f: view.references(f, catalog),
        total=len(findings),
        totals=view.totals(findings),
    )


def _change(entry: Mapping[str, Any], changes: Mapping[tuple[str, str], Mapping[str, Any]],
            titles: Mapping[str, str], status_of: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    key = (entry["control"], entry["target"])
    known = changes.get(key, {})
    return {**entry, "title": titles.get(entry["control"], ""), "before": known["before"] if known else "",
            "status": known.get("status") or status_of.get(key, "")}


def write_html(report: Mapping[str, Any], out_dir: Path, catalog: Catalog) -> Path:
    return atomic_write(out_dir / "report.html", render_html(report, catalog).encode("utf-8"))
