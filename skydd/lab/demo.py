"""``skydd lab demo``: the whole cycle on the local lab — audit (fails) → apply → attest → audit
(passes) — by running the same commands an operator would, so what it shows is what they get."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from estate.settings import Settings

from .errors import LabError

# Manual controls an officer attests in the demo, with the record the attestation rests on.
ATTESTED = {
    "a.failover-drill": "Failover drill: social-care database failed over to site 4 and back; "
                        "RTO 14 min, no data lost (row counts compared).",
    "a.restore-test": "Restore test: last night's base backup restored to a scratch host; "
                      "row counts and checksums match the primary.",
    "c.in-building": "Server room inspection: locked room in Torsby kommunhus, badge access log "
                     "reviewed, no unescorted visitors.",
}

Say = Callable[[str], None]


def _skydd(*args: str) -> int:
    """Run one skydd command in a child process, its output going straight to the terminal."""
    return subprocess.call([sys.executable, "-m", "skydd", *args])


def reset_lab(settings: Settings) -> None:
    """Start from the lab as found: stop it and remove its state (not keys, log or history)."""
    _skydd("lab", "down")
    shutil.rmtree(settings.lab, ignore_errors=True)
    (settings.home / "training.db").unlink(missing_ok=True)


def run_demo(settings: Settings, say: Say, *, keep: bool = False) -> Path:
    say("0/4 start the lab as found (unhardened)")
    reset_lab(settings)
    if _skydd("lab", "up") != 0:
        raise LabError("the lab did not come up (see above); 'skydd lab down' cleans up")
    try:
        say("1/4 audit the lab as found — it must fail")
        first = _skydd("audit")
        if first != 1:
            raise LabError(f"the first audit should fail (exit 1), it exited {first}")
        say("2/4 apply every level with Ansible (disruptive changes allowed: this is the lab)")
        if _skydd("apply", "--allow-disruptive") != 0:
            raise LabError("apply failed (see above)")
        say("3/4 officers attest the manual controls")
        records = settings.lab / "demo"
        records.mkdir(parents=True, exist_ok=True)
        expires = (datetime.now(UTC) + timedelta(days=365)).strftime("%Y-%m-%d")
        for control, text in ATTESTED.items():
            record = records / f"{control}.txt"
            record.write_text(text + "\n", encoding="utf-8")
            if _skydd("attest", control, "--evidence", str(record), "--expires", expires,
                      "--officer", "Demo Officer") != 0:
                raise LabError(f"attesting {control} failed")
        say("4/4 audit again — it must pass")
        last = _skydd("audit")
        report = (settings.reports / "latest").resolve()
        summary = json.loads((report / "report.json").read_text(encoding="utf-8"))["summary"]
        say(f"final audit: {summary['status']} (exit {last})")
        if last != 0:
            raise LabError(f"the final audit is {summary['status']}; see {report / 'report.html'}")
        return report
    finally:
        if not keep:
            _skydd("lab", "down")
