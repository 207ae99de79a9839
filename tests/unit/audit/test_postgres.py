"""The replication collector without a server: which systems it observes, an unreachable
cluster is ``error`` (never ``pass``), and the heartbeat's bounded wait on the mirror (with an
injected clock over a fake DB-API connection)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit.collectors import collectors_for, run_collectors
from audit.collectors.postgres import ReplicationCollector, from_inventory
from estate.inventory import Database, System
from estate.loader import load_inventory
from policies import Status, evaluate, load_catalog
from skydd.lab import LAB_INVENTORY

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _system(tmp_path: Path, rpo: int = 20, ca_file: str | None = "ca.pem") -> System:
    """A system whose clusters are at a loopback port nothing listens on."""
    ca = str(tmp_path / ca_file) if ca_file else None
    return System(id="socialcare", name="Social care", classification="classified",
                  municipality="torsby", primary_site="torsby", mirror_site="site4", rpo_seconds=rpo,
                  primary_db=Database(host="10.0.10.2", address="127.0.0.1", port=_free_port(),
                                      name="socialcare", ca_file=ca),
                  mirror_db=Database(host="10.0.40.2", address="127.0.0.1", port=_free_port(),
                                     name="socialcare", ca_file=ca))


def test_the_lab_inventory_yields_one_collector_for_the_mirrored_system(tmp_path: Path) -> None:
    inv, _ = load_inventory(LAB_INVENTORY, home=tmp_path)
    found = from_inventory(inv, tmp_path)
    assert [c.source_id for c in found] == ["socialcare"]
    (c,) = found
    assert c.site == "torsby" and c.municipality == "torsby"
    assert c.timeout > inv.systems[0].rpo_seconds  # the heartbeat wait fits in the timeout
    assert [c.source_id for c in collectors_for(inv, tmp_path, ["postgres.replication"])] == ["socialcare"]


def test_an_unreachable_primary_is_an_error_for_every_level_a_database_control(tmp_path: Path) -> None:
    evidence = run_collectors([ReplicationCollector(_system(tmp_path))], clock=lambda: AT)
    (ev,) = evidence
    assert ev.kind == "postgres.replication" and ev.error is not None
    assert "primary database 'socialcare'" in ev.error and "cannot be reached" in ev.error
    controls = [c for c in load_catalog().controls
                if c.level.value == "a" and c.applies_to.evidence == "postgres.replication"]
    assert len(controls) >= 5
    findings = evaluate(controls, evidence, [], AT)
    assert findings and {f.status for f in findings} == {Status.ERROR}


def test_a_database_without_a_ca_is_never_asked_without_tls_verification(tmp_path: Path) -> None:
    (ev,) = run_collectors([ReplicationCollector(_system(tmp_path, ca_file=None))], clock=lambda: AT)
    assert ev.error is not None and "no ca_file" in ev.error and "verify-full" in ev.error


# -- the heartbeat --------------------------------------------------------------------------------

class FakeCursor:
    def __init__(self, answer: Callable[[str, Any], list[tuple[Any, ...]]]) -> None:
        self.answer, self.rows, self.description = answer, [], None

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def execute(self, sql: str, args: Any = None) -> None:
        names, self.rows = self.answer(sql, args)
        self.description = [type("Col", (), {"name": n}) for n in names]

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


class FakeConnection:
    """The slice of psycopg's connection the collector uses: ``cursor()`` as a context."""

    def __init__(self, answer: Callable[[str, Any], Any]) -> None:
        self.answer, self.statements = answer, []

    def cursor(self) -> FakeCursor:
        def record(sql: str, args: Any) -> Any:
            self.statements.append(sql)
            return self.answer(sql, args)
        return FakeCursor(record)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def _heartbeat(tmp_path: Path, arrives_after: float | None, poll: bool = True
               ) -> tuple[dict[str, Any], Clock, FakeConnection]:
    clock = Clock()
    written: dict[str, Any] = {}

    def primary(sql: str, args: Any) -> Any:
        written["nonce"] = args[0]
        return ["id"], [(1,)]

    def mirror(sql: str, args: Any) -> Any:
        if arrives_after is not None and clock.now >= arrives_after:
            return ["nonce"], [(written["nonce"],)]
        return ["nonce"], [("an older nonce",)]

    c = ReplicationCollector(_system(tmp_path), monotonic=clock.monotonic, sleep=clock.sleep)
    m = FakeConnection(mirror)
    return c._heartbeat(FakeConnection(primary), m, poll), clock, m


def test_a_heartbeat_seen_on_the_mirror_reports_how_long_it_took(tmp_path: Path) -> None:
    hb, _clock, _ = _heartbeat(tmp_path, arrives_after=1.5)
    assert hb["written"] and hb["seen_on_mirror"] is True
    assert 1.5 <= hb["lag_s"] < 2.0 and "error" not in hb


def test_a_heartbeat_never_seen_is_waited_for_no_longer_than_the_rpo(tmp_path: Path) -> None:
    hb, clock, mirror = _heartbeat(tmp_path, arrives_after=None)
    assert hb["seen_on_mirror"] is False and hb["lag_s"] is None
    assert 20.0 <= hb["waited_s"] <= 20.0 + 0.2 + 1e-9 and clock.now <= 20.2
    assert len(mirror.statements) > 50  # it kept polling until the RPO ran out


def test_a_mirror_that_is_no_standby_is_not_polled(tmp_path: Path) -> None:
    hb, clock, mirror = _heartbeat(tmp_path, arrives_after=0.0, poll=False)
    assert hb["written"] and hb["seen_on_mirror"] is False and mirror.statements == []
    assert clock.now == 0.0 and "not polled" in hb["error"]
