"""HTML, OSCAL and JUnit reports rendered from real findings: real controls from the catalog,
evaluated by the engine over crafted evidence, signed, then rendered."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from trestle.oscal.assessment_results import AssessmentResults

from audit.reports import build_oscal, render_html, render_junit, write_reports
from audit.reports.json_report import build_report, sign_report, verify_report
from audit.signing import load_signer
from policies import Evidence, Status, Waiver, evaluate, load_catalog, load_fixtures

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CATALOG = load_catalog()
KEYS = CATALOG.by_id()["d.key-files-private"]
XSS = "<script>alert(1)</script>"


def _store(target: str, mode: str, *, site: str, municipality: str | None,
           name: str = "ca.key") -> Evidence:
    data = {"path": "/srv/pki", "files": [
        {"path": "/srv/pki", "type": "dir", "mode": "0700", "uid": 0, "gid": 0},
        {"path": f"/srv/pki/{name}", "type": "file", "mode": mode, "uid": 0, "gid": 0}]}
    return Evidence.observed("files.keystore", target, f"files:{target}", AT - timedelta(minutes=5),
                             data, site=site, municipality=municipality)


def _evidence() -> list[Evidence]:
    return [
        _store("torsby-pki", "0644", site="torsby", municipality="torsby", name=XSS),  # fail
        _store("torsby-tls", "0600", site="torsby", municipality="torsby"),            # pass
        _store("sunne-pki", "0640", site="sunne", municipality="sunne"),               # waived
        _store("sunne-old", "0640", site="sunne", municipality="sunne"),               # fail, expired waiver
        Evidence.unobserved("files.keystore", "hagfors-pki", "files:hagfors-pki", AT,
                            "connection refused", site="hagfors", municipality="hagfors"),
        _store("mirror-pki", "0600", site="site4", municipality=None),                 # pass, joint
    ]


def _waivers() -> list[Waiver]:
    return [
        Waiver("w-active", "d.key-files-private", "sunne-pki", "vendor app reads the key",
               "alice", AT - timedelta(days=2), AT + timedelta(days=30), "bob", AT - timedelta(days=1)),
        Waiver("w-expired", "d.key-files-private", "sunne-old", "migration window",
               "carol", AT - timedelta(days=60), AT - timedelta(days=1), "bob", AT - timedelta(days=59)),
    ]


def _report(tmp_path: Path, drift: dict | None = None) -> dict:
    findings = evaluate([KEYS], _evidence(), _waivers(), AT)
    report = build_report(findings, at=AT, inventory={"name": "socialcare-lab", "digest": "sha256:ab"},
                          catalog={"version": CATALOG.version, "digest": CATALOG.digest}, drift=drift)
    return sign_report(report, load_signer(tmp_path / "home"))


@pytest.fixture
def report(tmp_path: Path) -> dict:
    drift = {"previous": {"id": "prev-1", "generated_at": "2026-11-24T12:00:00.000000Z"},
             "newly_failing": [{"control": "d.key-files-private", "target": "torsby-pki"}],
             "newly_fixed": [{"control": "d.key-files-private", "target": "mirror-pki"}],
             "transitions": [{"control": "d.key-files-private", "target": "torsby-pki",
                              "before": "pass", "status": "fail"},
                             {"control": "d.key-files-private", "target": "mirror-pki",
                              "before": "fail", "status": "pass"}]}
    return _report(tmp_path, drift)


def _cells(html: str) -> dict[str, tuple[str, dict[str, int]]]:
    cells = {}
    for m in re.finditer(r'<td class="cell status-(\w+)" data-cell="([\w/-]+)">(.*?)</td>', html, re.S):
        counts = {s: int(n) for n, s in
                  ((n, s) for s, n in re.findall(r'data-status="(\w+)">(\d+) ', m.group(3)))}
        cells[m.group(2)] = (m.group(1), counts)
    return cells


def test_statuses_come_from_the_engine(report: dict) -> None:
    by_target = {f["target"]: f["status"] for f in report["findings"]}
    assert by_target == {"torsby-pki": "fail", "torsby-tls": "pass", "sunne-pki": "waived",
                         "sunne-old": "fail", "hagfors-pki": "error", "mirror-pki": "pass"}


def test_html_matrix_counts_and_colours(report: dict) -> None:
    cells = _cells(render_html(report, CATALOG))
    assert len(cells) == 5 * 4  # levels a–e × Torsby, Sunne, Hagfors, joint
    assert cells["d/torsby"] == ("fail", {"fail": 1, "pass": 1})
    assert cells["d/sunne"] == ("fail", {"fail": 1, "waived": 1})
    assert cells["d/hagfors"] == ("error", {"error": 1})
    assert cells["d/joint"] == ("pass", {"pass": 1})
    assert cells["a/torsby"] == ("none", {})
    for level, counts in report["summary"]["levels"].items():
        total = Counter()
        for key, (_, c) in cells.items():
            if key.startswith(f"{level}/"):
                total.update(c)
        assert dict(total) == {s: n for s, n in counts.items() if n}


def test_html_header_and_level_titles(report: dict) -> None:
    html = render_html(report, CATALOG)
    for text in (report["id"], report["generated_at"], report["signature"]["key_id"],
                 "socialcare-lab", "Noncompliant", "Authentication", "Autentisering", "Redundancy"):
        assert text in html
    assert "@media print" in html and "size: A4" in html
    totals = dict(re.findall(r'data-total="(\w+)">(\d+) ', html))
    assert totals == {"fail": "2", "error": "1", "waived": "1", "pass": "2"}


def test_html_failing_control_with_evidence_references_and_fix(report: dict) -> None:
    html = render_html(report, CATALOG)
    article = re.search(r'<article class="finding st-fail" data-control="d.key-files-private" '
                        r'data-target="torsby-pki">(.*?)</article>', html, re.S)
    assert article, "the failing finding is listed"
    body = article.group(1)
    failing = next(f for f in report["findings"] if f["target"] == "torsby-pki")
    for text in (KEYS.title, "high", "torsby", failing["evidence"]["digest"],
                 failing["evidence"]["source"], failing["evidence"]["collected_at"],
                 "-rw-r--r-- uid=0", "skydd apply --control d.key-files-private", "level_d.yml"):
        assert text in body, text
    titles = [CATALOG.reference_title(fw, rid) for fw, ids in KEYS.references.items() for rid in ids]
    assert titles and all(t and t in body for t in titles)
    assert CATALOG.frameworks["nis2"].title in body
    # passing findings are not listed as needing attention
    assert 'data-target="torsby-tls"' not in html and 'data-target="mirror-pki"' not in html
    assert re.search(r'<article class="finding st-error" data-control="d.key-files-private" '
                     r'data-target="hagfors-pki">', html)


def test_html_escapes_evidence_text(report: dict) -> None:
    html = render_html(report, CATALOG)
    assert XSS not in html and "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_html_makes_no_external_requests(report: dict) -> None:
    html = render_html(report, CATALOG)
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert "@import" not in html and "url(" not in html
    assert not re.search(r"<(?:script|img|link|iframe|object|embed)\b", html, re.I)


def test_html_drift_and_waivers(report: dict, tmp_path: Path) -> None:
    html = render_html(report, CATALOG)
    drift = re.search(r'<section id="drift">(.*?)</section>', html, re.S).group(1)
    assert "prev-1" in drift and "Newly failing" in drift and "(1)" in drift
    assert re.search(r"torsby-pki</td><td>pass</td>", drift)
    assert re.search(r"<table class=\"drift-fixed\">.*mirror-pki", drift, re.S)
    waivers = re.search(r'<section id="waivers">(.*?)</section>', html, re.S).group(1)
    expired = re.search(r'<tr data-waiver="w-expired">(.*?)</tr>', waivers, re.S).group(1)
    assert "EXPIRED" in expired and "migration window" in expired
    active = re.search(r'<tr data-waiver="w-active">(.*?)</tr>', waivers, re.S).group(1)
    assert "in force" in active and "EXPIRED" not in active
    first = render_html(_report(tmp_path), CATALOG)
    assert "first audit of this inventory" in first


def test_oscal_validates_and_carries_observations_findings_and_waiver_risks(
        report: dict, tmp_path: Path) -> None:
    path = tmp_path / "report.oscal.json"
    path.write_bytes(build_oscal(report).oscal_serialize_json_bytes(pretty=True))
    assert list(json.loads(path.read_text())) == ["assessment-results"]
    ar = AssessmentResults.oscal_read(path)  # re-parsed and validated by trestle's models
    (result,) = ar.results
    assert ar.metadata.version == report["id"]
    assert len(result.observations) == len(report["findings"]) == 6  # one per piece of evidence
    for obs in result.observations:
        props = {p.name: p.value for p in obs.props}
        assert props["evidence-digest"].startswith("sha256:")
        assert obs.collected.tzinfo is not None
    assert len(result.findings) == len(report["findings"])
    states = Counter(f.target.status.state.value for f in result.findings)
    assert states == {"not-satisfied": 4, "satisfied": 2}
    targets = {next(p.value for p in f.props if p.name == "target") for f in result.findings}
    assert targets == {f["target"] for f in report["findings"]}
    risks = {next(p.value for p in r.props if p.name == "waiver-id"): r for r in result.risks}
    raw = {r["uuid"]: r for r in json.loads(path.read_text())["assessment-results"]["results"][0]["risks"]}
    assert raw[risks["w-active"].uuid]["status"] == "deviation-approved"
    assert raw[risks["w-active"].uuid]["deadline"].startswith("2026-12-25T12:00:00")
    assert risks["w-active"].deadline == AT + timedelta(days=30)
    assert raw[risks["w-expired"].uuid]["status"] == "open"
    assert risks["w-expired"].deadline == AT - timedelta(days=1)
    waived = next(f for f in result.findings if any(p.value == "waived" for p in f.props))
    assert waived.related_risks[0].risk_uuid == risks["w-active"].uuid
    assert build_oscal(report) == build_oscal(report)  # same signed report, same document


def test_junit_parses_and_counts_match(report: dict) -> None:
    root = ET.fromstring(render_junit(report))
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "level d: Authentication"
    cases = suite.findall("testcase")
    assert len(cases) == len(report["findings"]) == int(root.get("tests"))
    assert (root.get("failures"), root.get("errors"), root.get("skipped")) == ("2", "1", "1")
    assert len(suite.findall("testcase/failure")) == 2
    skipped = suite.find("testcase/skipped")
    assert "w-active" in skipped.get("message")
    failure = next(c for c in cases if "torsby-pki" in c.get("name")).find("failure")
    assert XSS in failure.get("message")  # plain text once parsed; escaped in the file


def test_write_reports_writes_four_consistent_files(tmp_path: Path) -> None:
    findings = evaluate([KEYS], _evidence(), _waivers(), AT)
    report = build_report(findings, at=AT, inventory={"name": "socialcare-lab", "digest": "sha256:ab"},
                          catalog={"version": CATALOG.version, "digest": CATALOG.digest})
    out = tmp_path / "out"
    out.mkdir()
    signer = load_signer(tmp_path / "home")
    paths = write_reports(report, out, signer, CATALOG)
    assert set(paths) == {"json", "html", "oscal", "junit"}
    verified = verify_report(paths["json"], signer.public_key)
    signed = verified.report
    assert signed == report and verified.key_id == signed["signature"]["key_id"] == signer.key_id
    html = paths["html"].read_text(encoding="utf-8")
    assert signed["id"] in html and signer.key_id in html
    assert AssessmentResults.oscal_read(paths["oscal"]).metadata.version == signed["id"]
    assert ET.parse(paths["junit"]).getroot().get("tests") == str(len(signed["findings"]))
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.junit.xml",
                                                     "report.oscal.json", "report.pub.pem"]


def test_every_catalog_control_renders(tmp_path: Path) -> None:
    """Every control's fixtures, evaluated by the engine, render in all three formats."""
    findings = []
    for i, fx in enumerate(load_fixtures(CATALOG)):
        ev = Evidence.observed(fx.control.applies_to.evidence, f"{fx.name}-{i}", "fixture", AT,
                               fx.data, site="torsby", municipality="torsby")
        findings.extend(evaluate([fx.control], [ev], [], AT))
    report = sign_report(build_report(findings, at=AT, inventory={"name": "x", "digest": "sha256:0"},
                                      catalog={"version": "1", "digest": CATALOG.digest}),
                         load_signer(tmp_path / "home"))
    html = render_html(report, CATALOG)
    attention = sum(f.status in (Status.FAIL, Status.ERROR, Status.MANUAL) for f in findings)
    assert html.count('<article class="finding') == attention
    assert len(build_oscal(report).results[0].findings) == len(findings)
    assert ET.fromstring(render_junit(report)).get("tests") == str(len(findings))


def test_matrix_adds_other_municipalities_and_folds_many_into_one_column() -> None:
    from audit.reports.view import matrix

    def findings(n: int) -> list[dict]:
        ev = [_store(f"m{i}-pki", "0644", site=f"m{i}", municipality=f"m{i}") for i in range(n)]
        return [f.to_dict() for f in evaluate([KEYS], ev, [], AT)]

    few = matrix(findings(2))
    assert [c for c, _ in few.columns] == ["torsby", "sunne", "hagfors", "m0", "m1", "joint"]
    assert dict(few.rows[3].cells["m1"].counts) == {"fail": 1}
    many = matrix(findings(12))
    assert [c for c, _ in many.columns] == ["torsby", "sunne", "hagfors", "other", "joint"]
    assert dict(many.columns)["other"] == "12 other municipalities"
    assert dict(many.rows[3].cells["other"].counts) == {"fail": 12}


def test_a_report_with_only_the_design_fields_renders(tmp_path: Path) -> None:
    """The report contract (docs/architecture.md) requires fewer finding fields than the engine
    writes; renderers cope with both."""
    keep = ("control", "level", "target", "site", "status", "raw_status", "message", "evidence",
            "remediation", "references", "waiver")
    report = _report(tmp_path)
    report["findings"] = [{k: f[k] for k in keep} for f in report["findings"]]
    html = render_html(report, CATALOG)
    assert 'data-target="torsby-pki"' in html and "skydd apply --control d.key-files-private" in html
    assert len(build_oscal(report).results[0].findings) == 6
    assert ET.fromstring(render_junit(report)).get("failures") == "2"
