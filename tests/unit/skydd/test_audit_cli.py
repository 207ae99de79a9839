"""``skydd audit``, ``report verify`` and ``waiver`` through the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

SKYDD = str(Path(sys.executable).parent / "skydd")
CONTROL = "d.key-files-private"


def run(home: Path, *args: str, actor: str = "alice") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYDD_HOME": str(home), "SKYDD_ACTOR": actor}
    return subprocess.run([SKYDD, *args], capture_output=True, text=True, env=env, timeout=120)


def inventory(tmp_path: Path, keystore: Path) -> Path:
    p = tmp_path / "inventory.yaml"
    p.write_text(f"""
name: test
municipalities: [{{id: torsby, name: Torsby}}]
sites: [{{id: torsby, name: Torsby, municipality: torsby}}]
key_stores: [{{id: pki, site: torsby, path: "{keystore}"}}]
""")
    return p


@pytest.fixture
def keystore(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    d.mkdir(mode=0o755)
    (d / "ca.key").write_text("secret")
    (d / "ca.key").chmod(0o644)
    return d


def test_failing_audit_writes_signed_reports_and_exits_1(tmp_path: Path, keystore: Path) -> None:
    home = tmp_path / "home"
    r = run(home, "audit", "--inventory", str(inventory(tmp_path, keystore)), "--control", CONTROL)
    assert r.returncode == 1, r.stderr
    latest = home / "reports" / "latest"
    report = json.loads((latest / "report.json").read_text())
    (f,) = report["findings"]
    assert (f["control"], f["status"], f["target"], f["site"]) == (CONTROL, "fail", "pki", "torsby")
    assert str(keystore / "ca.key") in f["message"]
    assert report["summary"]["status"] == "noncompliant"
    assert oct((home / "keys" / "signing-ed25519.pem").stat().st_mode & 0o777) == "0o600"
    assert run(home, "report", "verify", str(latest / "report.json")).returncode == 0
    log = [json.loads(line) for line in (home / "audit.log").read_text().splitlines()]
    assert any(e.get("event") == "audit" and e["data"]["report"] == report["id"] for e in log)


def test_any_changed_byte_breaks_the_signature(tmp_path: Path, keystore: Path) -> None:
    home = tmp_path / "home"
    run(home, "audit", "--inventory", str(inventory(tmp_path, keystore)), "--control", CONTROL)
    path = home / "reports" / "latest" / "report.json"
    text = path.read_text()
    path.write_text(text.replace('"status": "fail"', '"status": "pass"', 1))
    r = run(home, "report", "verify", str(path))
    assert r.returncode == 1 and "invalid" in r.stderr


def test_unreachable_source_still_writes_a_complete_signed_report_and_exits_3(tmp_path: Path) -> None:
    home = tmp_path / "home"
    r = run(home, "audit", "--inventory", str(inventory(tmp_path, tmp_path / "absent")),
            "--control", CONTROL)
    assert r.returncode == 3, r.stdout + r.stderr
    report_path = home / "reports" / "latest" / "report.json"
    (f,) = json.loads(report_path.read_text())["findings"]
    assert f["status"] == "error" and "does not exist" in f["message"]
    assert run(home, "report", "verify", str(report_path)).returncode == 0


def test_fixing_the_cause_shows_as_newly_fixed(tmp_path: Path, keystore: Path) -> None:
    home = tmp_path / "home"
    inv = str(inventory(tmp_path, keystore))
    assert run(home, "audit", "--inventory", inv, "--control", CONTROL).returncode == 1
    keystore.chmod(0o700)
    (keystore / "ca.key").chmod(0o600)
    r = run(home, "audit", "--inventory", inv, "--control", CONTROL)
    assert r.returncode == 0, r.stdout
    drift = json.loads((home / "reports" / "latest" / "report.json").read_text())["drift"]
    assert drift["newly_fixed"] == [{"control": CONTROL, "target": "pki"}]
    assert "1 newly fixed" in r.stdout


def test_waiver_needs_four_eyes_and_then_waives(tmp_path: Path, keystore: Path) -> None:
    home = tmp_path / "home"
    inv = str(inventory(tmp_path, keystore))
    expires = (datetime.now(UTC) + timedelta(days=200)).strftime("%Y-%m-%dT%H:%M:%SZ")
    r = run(home, "waiver", "request", CONTROL, "--reason", "HSM arrives in December",
            "--expires", expires)
    assert r.returncode == 0, r.stderr
    wid = r.stdout.split()[1]
    same = run(home, "waiver", "approve", wid, actor="alice")
    assert same.returncode == 2 and "must not be the requester" in same.stderr
    assert run(home, "waiver", "approve", wid, actor="bob").returncode == 0
    r = run(home, "audit", "--inventory", inv, "--control", CONTROL)
    assert r.returncode == 0, r.stdout
    (f,) = json.loads((home / "reports" / "latest" / "report.json").read_text())["findings"]
    assert (f["status"], f["raw_status"], f["waiver"]["approver"]) == ("waived", "fail", "bob")
    listed = json.loads(run(home, "waiver", "list", "--format", "json").stdout)
    assert [(w["id"], w["state"]) for w in listed] == [(wid, "active")]


@pytest.mark.parametrize("args,needle", [
    (["audit", "--level", "x"], "--level"),
    (["audit", "--control", "z.nope"], "no such control"),
    (["audit", "--site", "mars"], "--site"),
    (["audit", "--inventory", "/nonexistent.yaml"], "cannot read inventory"),
    (["waiver", "request", CONTROL, "--reason", "r", "--expires", "tomorrow"], "--expires"),
    (["waiver", "request", CONTROL, "--reason", "r", "--expires", "2001-01-01T00:00:00Z"], "past"),
    (["report", "verify", "/nonexistent.json"], "not a readable"),
])
def test_bad_input_is_one_line_without_traceback(tmp_path: Path, args, needle) -> None:
    r = run(tmp_path / "home", *args)
    assert r.returncode in (1, 2) and needle in r.stderr
    assert "Traceback" not in r.stderr
    if args[0] != "report":
        assert r.returncode == 2


def test_unreachable_history_still_writes_the_signed_report(tmp_path: Path, keystore: Path) -> None:
    home = tmp_path / "home"
    env_url = "postgresql+psycopg://skydd@127.0.0.1:1/none?connect_timeout=2"
    r = subprocess.run([SKYDD, "audit", "--inventory", str(inventory(tmp_path, keystore)),
                        "--control", CONTROL], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "SKYDD_HOME": str(home), "SKYDD_HISTORY_URL": env_url})
    assert r.returncode == 1, r.stderr
    assert "warning: drift not computed" in r.stderr
    report = json.loads((home / "reports" / "latest" / "report.json").read_text())
    assert "cannot" in report["drift"]["unavailable"]
    assert run(home, "report", "verify", str(home / "reports" / "latest" / "report.json")).returncode == 0


def test_profile_leaves_out_controls_and_the_report_says_why(tmp_path: Path, keystore: Path) -> None:
    from estate.errors import InputError
    from estate.loader import load_inventory
    from policies import load_catalog
    from skydd.auditing import Selection

    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "no-kms.yaml").write_text(
        "id: no-kms\ntitle: t\ndescription: d\nexclude: {c.vm-encryption: No key provider yet.}\n")
    catalog = load_catalog(profiles_dir=tmp_path / "profiles")
    inv, _ = load_inventory(inventory(tmp_path, keystore), home=tmp_path / "home")
    chosen = {c.id for c in Selection.parse("c", None, None, "no-kms").apply(catalog, inv)}
    assert "c.vm-encryption" not in chosen and "c.esxi-ntp" in chosen
    selection = Selection.parse("c", None, None, "no-kms").as_dict(catalog)
    assert selection["profile"] == "no-kms"
    assert selection["excluded"] == {"c.vm-encryption": "No key provider yet."}
    with pytest.raises(InputError, match="holds no controls"):
        Selection.parse(None, "c.vm-encryption", None, "no-kms").apply(catalog, inv)

    home = tmp_path / "home"
    r = run(home, "audit", "--inventory", str(inventory(tmp_path, keystore)), "--profile", "nope")
    assert r.returncode == 2 and "no such profile" in r.stderr
