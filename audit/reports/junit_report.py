"""``report.junit.xml``: one testsuite per level, one testcase per finding, so a CI system shows
the audit like a test run. fail → ``failure``; error and manual → ``error``; notapplicable and
waived → ``skipped`` with the reason."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from policies import Level, Status
from policies.model import LEVEL_TITLES

from . import view
from .output import atomic_write


def _detail(f: Mapping[str, Any]) -> str:
    lines = [f["message"], f"target: {f['target']}", f"severity: {f.get('severity')}"]
    ev = f.get("evidence")
    if ev:
        lines.append(f"evidence: {ev['source']} at {ev['collected_at']} ({ev['digest']})")
    if f.get("observed") is not None:
        lines.append("observed: " + json.dumps(f["observed"], sort_keys=True, default=str))
    rem = f.get("remediation")
    if rem:
        lines.append(f"fix: skydd apply --control {f['control']}  "
                     f"(playbook {rem['playbook']}, tags {','.join(rem['tags'])})")
    return "\n".join(lines)


def _skip_reason(f: Mapping[str, Any]) -> str:
    w = f.get("waiver")
    if f["status"] == Status.WAIVED.value and w:
        return f"waived by {w['id']} until {w['expires_at']}: {w['reason']}"
    message: str = f["message"]
    return message


def build_junit(report: Mapping[str, Any]) -> ET.Element:
    findings = view.findings_of(report)
    root = ET.Element("testsuites", name=f"skydd audit {report['id']}")
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for level in Level:
        chosen = [f for f in findings if f["level"] == level.value]
        if not chosen:
            continue
        suite = ET.SubElement(root, "testsuite", name=f"level {level.value}: {LEVEL_TITLES[level]}",
                              timestamp=report["generated_at"], hostname=report["inventory"]["name"])
        counts = dict.fromkeys(totals, 0)
        for f in chosen:
            counts["tests"] += 1
            case = ET.SubElement(suite, "testcase", classname=f"skydd.{level.value}.{f['control']}",
                                 name=f"{f['control']} [{f['target']}]", time="0")
            status = Status(f["status"])
            if status is Status.FAIL:
                counts["failures"] += 1
                el = ET.SubElement(case, "failure", message=f["message"], type=f"{f.get('severity')}")
                el.text = _detail(f)
            elif status in (Status.ERROR, Status.MANUAL):
                counts["errors"] += 1
                el = ET.SubElement(case, "error", message=f["message"], type=status.value)
                el.text = _detail(f)
            elif status in (Status.NOTAPPLICABLE, Status.WAIVED):
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=_skip_reason(f))
        for key, n in counts.items():
            suite.set(key, str(n))
            totals[key] += n
    for key, n in totals.items():
        root.set(key, str(n))
    return root


def render_junit(report: Mapping[str, Any]) -> bytes:
    root = build_junit(report)
    ET.indent(ET.ElementTree(root))
    xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)  # bytes for any encoding but "unicode"
    return xml + b"\n"


def write_junit(report: Mapping[str, Any], out_dir: Path) -> Path:
    return atomic_write(out_dir / "report.junit.xml", render_junit(report))
