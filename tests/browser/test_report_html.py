"""The HTML report as a security officer sees it: in a real Chromium, offline, printable."""

from __future__ import annotations

import re
from pathlib import Path

from tests.unit.skydd.test_audit_cli import CONTROL, inventory, run


def failing_report(tmp_path: Path) -> Path:
    ks = tmp_path / "pki"
    ks.mkdir(mode=0o755)
    (ks / "ca.key").write_text("k")
    (ks / "ca.key").chmod(0o644)
    home = tmp_path / "home"
    assert run(home, "audit", "--inventory", str(inventory(tmp_path, ks)), "--control", CONTROL).returncode == 1
    return home / "reports" / "latest" / "report.html"


def test_report_renders_offline_with_matrix_and_failing_evidence(tmp_path: Path, browser) -> None:
    html = failing_report(tmp_path)
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(html.as_uri())
    assert requests == [html.as_uri()], "the report must be self-contained"
    assert errors == []
    cell = page.locator('td[data-cell="d/torsby"]')
    assert "status-fail" in (cell.get_attribute("class") or "")
    assert re.search(r"1\s+fail", cell.inner_text())
    finding = page.locator(f'article[data-control="{CONTROL}"]')
    assert finding.is_visible()
    text = finding.inner_text()
    assert str(tmp_path / "pki" / "ca.key") in text
    assert "A.5.17" in text and "skydd apply --control" in text
    page.close()


def test_report_prints_to_pdf(tmp_path: Path, browser) -> None:
    page = browser.new_page()
    page.goto(failing_report(tmp_path).as_uri())
    page.emulate_media(media="print")
    pdf = page.pdf(format="A4")
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page[^s]", pdf)) >= 1
    page.close()
