"""Enforcement planning, directory sync, the collector's evidence and the access decision's
training source, over a real SQLite store (no Keycloak: the directory is plain values)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from audit.collectors.training import TrainingCollector
from identity.training import StoreTrainingSource
from identity.training_enforce import DirectoryUser, plan, sync
from identity.training_import import import_text
from identity.training_store import TrainingStore
from policies import load_catalog
from policies.engine import evaluate
from policies.model import Evidence
from skydd.lab.training import lms_export, seed_states

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CATALOGUE = Path(__file__).resolve().parents[3] / "skydd" / "lab" / "training-courses.json"


def dir_user(name: str, *, role: bool = True, group: str | None = "torsby", enabled: bool = True,
             via_group: bool = False, first_login: datetime | None = None) -> DirectoryUser:
    return DirectoryUser(id=f"id-{name}", username=name, enabled=enabled, hsa_id=None,
                         groups=(group,) if group else (), direct_role=role and not via_group,
                         group_role=via_group, created_at=AT - timedelta(days=3),
                         first_login_at=first_login)


@pytest.fixture
def store(tmp_path: Path) -> TrainingStore:
    s = TrainingStore(f"sqlite:///{tmp_path / 'training.db'}")
    import_text(s, CATALOGUE.read_text(), "json", "courses.json", AT - timedelta(days=1))
    yield s
    s.close()


def complete(store: TrainingStore, user: str, when: datetime) -> None:
    rows = "".join(f"{user},{c},{when:%Y-%m-%dT%H:%M:%SZ}\n"
                   for c in ("infosec-basics", "patient-data", "eid-card-use"))
    import_text(store, "username,course,completed_at\n" + rows, "csv", "lms.csv", AT)


def test_sync_registers_role_holders_in_groups_only_and_is_idempotent(store: TrainingStore) -> None:
    users = [dir_user("anna.torsby"), dir_user("no.group", group=None), dir_user("no.role", role=False)]
    assert sync(store, users, AT) == ["anna.torsby"]
    assert set(store.users()) == {"anna.torsby"}
    assert store.last_event("sync") == AT
    assert sync(store, users, AT + timedelta(hours=1)) == []  # nothing new
    assert store.last_event("sync") == AT + timedelta(hours=1)


def test_sync_dry_run_writes_nothing(store: TrainingStore) -> None:
    assert sync(store, [dir_user("anna.torsby")], AT, dry_run=True) == ["anna.torsby"]
    assert store.users() == {} and store.last_event("sync") is None


def test_plan_removes_untrained_and_restores_the_trained(store: TrainingStore) -> None:
    users = [dir_user("trained"), dir_user("lapsed"), dir_user("never"), dir_user("stranger")]
    sync(store, users, AT)
    complete(store, "trained", AT - timedelta(days=10))
    complete(store, "lapsed", AT - timedelta(days=400))  # infosec-basics is valid 365 days
    users.append(dir_user("removed.earlier", role=False))
    with store.transaction() as s:
        store.register_user(s, "removed.earlier", AT, roles=["socialcare-user"])
    complete(store, "removed.earlier", AT - timedelta(days=1))
    with store.transaction() as s:  # the stranger holds the role but the store never knew them
        from identity.training_store import User
        s.delete(s.query(User).filter_by(username="stranger").one())
    p = plan(users, store.standings(AT))
    assert {c.username: c.reason for c in p.remove} == {
        "lapsed": "infosec-basics expired", "never": "eid-card-use missing; infosec-basics missing; "
        "patient-data missing", "stranger": "no training record"}
    assert [c.username for c in p.restore] == ["removed.earlier"]
    assert p.changed and not p.blocked


def test_plan_is_empty_once_converged_and_blocks_group_granted_roles(store: TrainingStore) -> None:
    users = [dir_user("trained")]
    sync(store, users, AT)
    complete(store, "trained", AT - timedelta(days=10))
    assert not plan(users, store.standings(AT)).changed
    p = plan([dir_user("via.group", via_group=True)], store.standings(AT))
    assert [c.username for c in p.blocked] == ["via.group"] and not p.remove


def test_disabled_or_groupless_users_do_not_get_the_role_back(store: TrainingStore) -> None:
    users = [dir_user("off", role=False, enabled=False), dir_user("out", role=False, group=None)]
    with store.transaction() as s:
        for u in ("off", "out"):
            store.register_user(s, u, AT, roles=["socialcare-user"])
    complete(store, "off", AT)
    complete(store, "out", AT)
    assert plan(users, store.standings(AT)).restore == ()


def test_collector_evidence_drives_the_level_e_controls(store: TrainingStore) -> None:
    """The collector's snapshot of a real store, evaluated by the real catalog: before sync and
    enforcement every control fails; after them every control passes."""
    users = [dir_user("anna.torsby"), dir_user("bo.sunne", group="sunne")]
    with store.transaction() as s:
        for u in users:
            store.register_user(s, u.username, AT - timedelta(days=2), roles=["socialcare-user"])
    complete(store, "anna.torsby", AT - timedelta(days=5))
    collector = TrainingCollector("socialcare", store_url=store.url, keycloak={"realm": "socialcare"},
                                  groups=["torsby", "sunne"])
    controls = [c for c in load_catalog().controls if c.level.value == "e"]
    assert len(controls) >= 5

    def statuses(directory: list[DirectoryUser]) -> dict[str, str]:
        data = json.loads(json.dumps(collector.snapshot(store, directory)))
        ev = Evidence.observed("training.users", "socialcare", "training:socialcare", AT, data)
        return {f.control: f.status.value for f in evaluate(controls, [ev], [], AT)}

    assert set(statuses(users).values()) == {"fail"}
    sync(store, users, AT - timedelta(hours=1))
    p = plan(users, store.standings(AT))
    assert [c.username for c in p.remove] == ["bo.sunne"]
    with store.transaction() as s:
        store.record_event(s, "enforcement", AT - timedelta(hours=1), p.to_dict())
    enforced = [users[0], dir_user("bo.sunne", group="sunne", role=False)]
    assert set(statuses(enforced).values()) == {"pass"}


def test_unreachable_store_is_an_error_not_a_pass(tmp_path: Path) -> None:
    from audit.collectors import run_collectors

    c = TrainingCollector("socialcare", store_url=f"sqlite:///{tmp_path / 'absent.db'}",
                          keycloak={"realm": "socialcare"}, groups=["torsby"])
    (ev,) = run_collectors([c], clock=lambda: AT)
    assert ev.error is not None and "does not exist" in ev.error


def test_the_access_decision_source_denies_the_untrained(store: TrainingStore) -> None:
    sync(store, [dir_user("trained"), dir_user("lapsed")], AT)
    complete(store, "trained", AT - timedelta(days=10))
    complete(store, "lapsed", AT - timedelta(days=400))
    source = StoreTrainingSource(store.url, ttl=0)
    assert source.training_status("trained", None, AT).current
    lapsed = source.training_status("lapsed", None, AT)
    assert not lapsed.current and "infosec-basics" in (lapsed.reason or "")
    assert not source.training_status("nobody", None, AT).current


def test_lab_seed_marks_second_expired_and_fourth_missing_per_group() -> None:
    staff = {"torsby": ["anna.torsby", "bertil.torsby", "cecilia.torsby", "david.torsby", "probe.card"],
             "sunne": ["erik.sunne", "frida.sunne"]}
    states = seed_states(staff)
    assert states == {"anna.torsby": "current", "bertil.torsby": "expired", "cecilia.torsby": "current",
                      "david.torsby": "missing", "probe.card": "current", "erik.sunne": "current",
                      "frida.sunne": "expired"}
    csv_text = lms_export(states, [("infosec-basics", 365)], AT)
    assert "david.torsby" not in csv_text
    assert "bertil.torsby,infosec-basics,2025-10-16T12:00:00Z" in csv_text


def test_each_control_scope_removes_only_its_population(store: TrainingStore) -> None:
    old = DirectoryUser(id="id-old", username="old.untrained", enabled=True, hsa_id=None,
                        groups=("torsby",), direct_role=True, group_role=False,
                        created_at=AT - timedelta(days=400), first_login_at=None)
    users = [dir_user("never"), dir_user("lapsed"), old, dir_user("outside", group=None)]
    sync(store, users, AT)
    complete(store, "lapsed", AT - timedelta(days=400))
    complete(store, "old.untrained", AT - timedelta(days=400))
    standings = store.standings(AT)

    def removed(scope: str) -> list[str]:
        return sorted(c.username for c in plan(users, standings, scope=scope, at=AT).remove)

    assert removed("records") == ["never", "outside"]  # no record; "outside" is not in the store
    assert removed("reachable") == ["lapsed", "never", "old.untrained"]
    assert removed("new") == ["lapsed", "never"]  # created three days ago
    assert removed("all") == ["lapsed", "never", "old.untrained", "outside"]
    assert plan(users, standings, scope="reachable", at=AT).restore == ()
