"""The access decision's audit trail: the shell records every deny, never the token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from identity.decision import AccessDecision, Code, Decision, Reason
from identity.tokens import Verifier
from skydd.deny_log import DenyLog
from tests.unit.identity.fake_idp import FakeIdp
from tests.unit.identity.test_decision import AT, POLICY, Trained


def test_every_deny_is_in_the_audit_log_without_the_token(tmp_path: Path) -> None:
    idp = FakeIdp(tmp_path / "idp")
    home = tmp_path / "home"
    deny_log = DenyLog(home)
    try:
        decider = AccessDecision(Verifier.from_inventory(idp.inventory()), POLICY, Trained())
        good, low = idp.token(AT), idp.token(AT, acr="1")
        decisions = [decider.decide(t, AT) for t in (good, low, "not.a.token")]
        for decision in decisions:
            deny_log.record(decision)
    finally:
        deny_log.close()
        idp.stop()
    assert [d.allow for d in decisions] == [True, False, False]
    text = (home / "audit.log").read_text()
    entries = [e for e in map(json.loads, text.splitlines()) if e["event"].startswith("access.")]
    assert [e["event"] for e in entries] == ["access.deny", "access.deny"]  # allows are not logged
    assert entries[0]["data"]["user"] == "anna.torsby"
    assert entries[0]["data"]["reasons"][0]["code"] == "acr"
    assert entries[1]["data"]["reasons"][0]["cause"] == "malformed"
    assert low not in text and good not in text and low.split(".")[1] not in text
    assert entries[0]["data"]["token"].startswith("sha256:") and entries[0]["at"].startswith("2026-11-25T12:00")


def test_a_log_that_cannot_be_written_leaves_the_deny_standing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    deny_log = DenyLog(tmp_path / "home")

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(deny_log._log, "append", disk_full)
    deny = Decision(allow=False, reasons=(Reason(Code.ACR, "acr", "too weak"),), at=AT, token="sha256:x")
    deny_log.record(deny)  # never raised into the request that is being denied
    assert "could not append the deny to the audit log" in caplog.text
    assert "No space left on device" in caplog.text
