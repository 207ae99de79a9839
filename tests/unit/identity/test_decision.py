"""The access decision's rules and its training sources."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from identity.decision import Code, Policy, evaluate
from identity.errors import TrainingUnavailable
from identity.tokens import VerifiedToken
from identity.training import FileTrainingSource, StoreTrainingSource, TrainingStatus

AT = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
NOW = int(AT.timestamp())
POLICY = Policy(municipality_groups=frozenset({"torsby", "sunne", "hagfors"}), max_auth_age_seconds=3600)


class Trained:
    def __init__(self, current: bool = True, reason: str | None = None, broken: bool = False) -> None:
        self.current, self.reason, self.broken = current, reason, broken
        self.asked: list[tuple[str, str | None]] = []

    def training_status(self, username: str, hsa_id: str | None, at: dt.datetime) -> TrainingStatus:
        self.asked.append((username, hsa_id))
        if self.broken:
            raise TrainingUnavailable("training store unreachable")
        return TrainingStatus(self.current, self.reason)


def token(**overrides: Any) -> VerifiedToken:
    claims = {"sub": "u1", "preferred_username": "anna.torsby", "hsaId": "SE2321000016-T001",
              "acr": "eid-card-otp", "amr": ["sc", "otp"], "groups": ["torsby"],
              "realm_access": {"roles": ["socialcare-user"]}, "auth_time": NOW - 600}
    claims.update(overrides)
    return VerifiedToken({k: v for k, v in claims.items() if v is not None}, "k1", "RS256", "sha256:ab")


def test_allow_when_every_rule_holds() -> None:
    source = Trained()
    d = evaluate(token(), POLICY, source, AT)
    assert d.allow and d.reasons == () and d.municipalities == ("torsby",)
    assert source.asked == [("anna.torsby", "SE2321000016-T001")]
    assert d.to_dict()["decision"] == "allow"


@pytest.mark.parametrize("overrides,code,cause", [
    ({"acr": None}, Code.ACR, "missing"),
    ({"acr": "1"}, Code.ACR, "insufficient"),
    ({"amr": ["pwd", "otp"]}, Code.AMR, "missing_factor"),
    ({"amr": ["sc"]}, Code.AMR, "missing_factor"),
    ({"amr": None}, Code.AMR, "missing_factor"),
    ({"groups": ["skydd-officers"]}, Code.GROUP, "no_municipality"),
    ({"groups": None}, Code.GROUP, "no_municipality"),
    ({"realm_access": {"roles": ["offline_access"]}}, Code.ROLE, "missing"),
    ({"auth_time": NOW - 3601}, Code.AUTH_AGE, "too_old"),
    ({"auth_time": None}, Code.AUTH_AGE, "missing"),
    ({"auth_time": True}, Code.AUTH_AGE, "missing"),
    ({"auth_time": float("nan")}, Code.AUTH_AGE, "missing"),
    ({"auth_time": float("-inf")}, Code.AUTH_AGE, "missing"),
    ({"auth_time": NOW + 3600}, Code.AUTH_AGE, "future"),
])
def test_each_rule_denies_with_its_code(overrides: dict[str, Any], code: Code, cause: str) -> None:
    d = evaluate(token(**overrides), POLICY, Trained(), AT)
    assert not d.allow
    assert [(r.code, r.cause) for r in d.reasons] == [(code, cause)]


def test_groups_with_leading_slash_count_and_every_reason_is_reported() -> None:
    assert evaluate(token(groups=["/sunne", "/hagfors"]), POLICY, Trained(), AT).municipalities == (
        "hagfors", "sunne")
    d = evaluate(token(acr="1", amr=["pwd"], groups=[], auth_time=NOW - 7200), POLICY,
                 Trained(False, "course it-security expired"), AT)
    assert d.codes == ("acr", "amr", "group", "auth_age", "training")
    assert d.reasons[-1].message == "course it-security expired"


def test_training_not_current_or_unavailable_denies() -> None:
    assert evaluate(token(), POLICY, Trained(False), AT).codes == ("training",)
    d = evaluate(token(), POLICY, Trained(broken=True), AT)
    assert d.codes == ("training",) and d.reasons[0].cause == "unavailable"


def test_file_training_source(tmp_path: Path) -> None:
    path = tmp_path / "training.yaml"
    path.write_text("required: [it-security, confidentiality]\nusers:\n"
                    "  anna.torsby: {it-security: 2027-01-01T00:00:00Z, confidentiality: 2026-12-01T00:00:00Z}\n"
                    "  SE2321000016-S002: {it-security: 2027-01-01T00:00:00Z}\n")
    src = FileTrainingSource(path, recheck_seconds=0)  # look at the file on every decision
    assert src.training_status("anna.torsby", None, AT).current
    lapsed = src.training_status("anna.torsby", None, dt.datetime(2026, 12, 2, tzinfo=dt.UTC))
    assert not lapsed.current and "confidentiality expired" in (lapsed.reason or "")
    by_hsa = src.training_status("sven.sunne", "SE2321000016-S002", AT)
    assert not by_hsa.current and "confidentiality" in (by_hsa.reason or "")
    assert not src.training_status("nobody", None, AT).current
    path.write_text("required: [it-security]\nusers: {nobody: {it-security: 2027-01-01T00:00:00Z}}\n")
    assert src.training_status("nobody", None, AT).current  # re-read after the change
    path.write_text("required: [x]\nusers: {a: {x: 2027-01-01}}\n")  # no timezone
    with pytest.raises(TrainingUnavailable):
        src.training_status("a", None, AT)
    with pytest.raises(TrainingUnavailable):
        FileTrainingSource(tmp_path / "missing.yaml").training_status("a", None, AT)


def test_file_training_source_looks_at_the_file_at_most_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "training.yaml"
    path.write_text("required: [it-security]\nusers: {anna.torsby: {it-security: 2027-01-01T00:00:00Z}}\n")
    src = FileTrainingSource(path, recheck_seconds=1.0)
    assert src.training_status("anna.torsby", None, AT).current
    path.write_text("required: [it-security]\nusers: {bo.torsby: {it-security: 2027-01-01T00:00:00Z}}\n"
                    "# anna's record withdrawn\n")
    soon = AT + dt.timedelta(seconds=0.9)
    assert src.training_status("anna.torsby", None, soon).current  # not looked at yet
    later = AT + dt.timedelta(seconds=1.0)
    withdrawn = src.training_status("anna.torsby", None, later)
    assert not withdrawn.current and "no training records" in (withdrawn.reason or "")
    assert src.training_status("bo.torsby", None, later).current
    path.unlink()  # a file that disappears denies once the interval has passed
    assert src.training_status("bo.torsby", None, later + dt.timedelta(seconds=0.5)).current
    with pytest.raises(TrainingUnavailable):
        src.training_status("bo.torsby", None, later + dt.timedelta(seconds=1.0))
    path.write_text("required: [it-security]\nusers: {anna.torsby: {it-security: 2027-01-01T00:00:00Z}}\n")
    earlier = AT - dt.timedelta(seconds=5)  # another request's earlier ``at`` looks again too
    assert src.training_status("anna.torsby", None, earlier).current


def test_store_training_source_over_a_real_sqlite_store(tmp_path: Path) -> None:
    from sqlalchemy import select

    from identity.training_store import Completion, Course, TrainingStore, User

    url = f"sqlite:///{tmp_path / 'training.db'}"
    with pytest.raises(TrainingUnavailable):
        StoreTrainingSource(url).training_status("anna.torsby", None, AT)  # no store yet
    store = TrainingStore(url)
    with store.transaction() as s:
        store.define_course(s, "it-security", "IT security", 365)
        store.require(s, "socialcare-user", "it-security")
        store.register_user(s, "anna.torsby", AT - dt.timedelta(days=400), hsa_id="SE2321000016-T001",
                            roles=["socialcare-user"])
        store.register_user(s, "bo.torsby", AT - dt.timedelta(days=400), roles=["socialcare-user"])
        anna = s.scalar(select(User).where(User.username == "anna.torsby"))
        course = s.scalar(select(Course).where(Course.code == "it-security"))
        s.add(Completion(user=anna, course=course, completed_at=AT - dt.timedelta(days=300),
                         source="test", recorded_at=AT))
    store.close()
    src = StoreTrainingSource(url, ttl=30)
    assert src.training_status("anna.torsby", "SE2321000016-T001", AT).current
    later = AT + dt.timedelta(days=66)  # 366 days after completion
    lapsed = src.training_status("anna.torsby", "SE2321000016-T001", later)
    assert not lapsed.current and "expired" in (lapsed.reason or "")
    bo = src.training_status("bo.torsby", None, AT)
    assert not bo.current and "not completed" in (bo.reason or "")
    assert not src.training_status("eve", None, AT).current
    assert not src.training_status("anna.torsby", "SE-OTHER", AT).current
