"""Evidence bundles: captured evidence replays offline; an altered file is an error, never a pass."""

from __future__ import annotations

import json
from pathlib import Path

from audit.collectors import run_collectors
from audit.collectors.bundle import BundleCollector
from tests.unit.skydd.test_audit_cli import CONTROL, inventory, run


def test_capture_then_replay_offline(tmp_path: Path) -> None:
    ks = tmp_path / "pki"
    ks.mkdir(mode=0o700)
    (ks / "k").write_text("x")
    (ks / "k").chmod(0o600)
    home = tmp_path / "home"
    inv = str(inventory(tmp_path, ks))
    bundle = tmp_path / "bundle"
    assert run(home, "audit", "--inventory", inv, "--control", CONTROL, "--capture", str(bundle)).returncode == 0
    (ev,) = run_collectors([BundleCollector(bundle)])
    assert (ev.kind, ev.target, ev.error) == ("files.keystore", "pki", None)
    original = json.loads(next((bundle / "evidence").glob("*/*.json")).read_text())
    assert ev.digest == original["digest"] and ev.source == original["source"]
    # Offline: the key store itself is gone, the bundle still proves what was seen.
    (ks / "k").unlink()
    ks.rmdir()
    assert run(home, "audit", "--inventory", inv, "--control", CONTROL, "--evidence", str(bundle)).returncode == 0


def test_altered_evidence_is_an_error(tmp_path: Path) -> None:
    ks = tmp_path / "pki"
    ks.mkdir(mode=0o755)
    home = tmp_path / "home"
    inv = str(inventory(tmp_path, ks))
    bundle = tmp_path / "bundle"
    assert run(home, "audit", "--inventory", inv, "--control", CONTROL, "--capture", str(bundle)).returncode == 1
    f = next((bundle / "evidence").glob("*/*.json"))
    doc = json.loads(f.read_text())
    doc["data"]["files"][0]["mode"] = "0700"  # make it look compliant
    f.write_text(json.dumps(doc))
    r = run(home, "audit", "--inventory", inv, "--control", CONTROL, "--evidence", str(bundle))
    assert r.returncode == 3
    (finding,) = json.loads((home / "reports" / "latest" / "report.json").read_text())["findings"]
    assert finding["status"] == "error" and "digest mismatch" in finding["message"]


def test_not_a_bundle_is_bad_input(tmp_path: Path) -> None:
    r = run(tmp_path / "home", "audit", "--evidence", str(tmp_path))
    assert r.returncode == 2 and "not an evidence bundle" in r.stderr
