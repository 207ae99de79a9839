"""PostgreSQL replication to the mirror site: ``postgres.replication``, one per system with a
``primary_db`` and a ``mirror_db``.

From the primary: ``pg_stat_replication`` (with the byte lag ``pg_wal_lsn_diff(current, replay)``
and the age of the last reply, both computed by the server), TLS from ``pg_stat_ssl`` and
``pg_replication_slots``. From the mirror: ``pg_is_in_recovery()``, ``hot_standby`` and
``pg_stat_wal_receiver``. Then an end-to-end heartbeat: a fresh nonce written on the primary and
polled for on the mirror for at most the system's RPO. ``replay_lag`` is recorded but never
judged alone: PostgreSQL keeps its last value while the mirror is cut off.

Each cluster is reached over TCP at its ``address`` (default ``host``) with TLS ``verify-full``
against the inventory's ``ca_file``, as a monitoring role that is a member of ``pg_monitor`` and
never a superuser: a superuser login, a role without ``pg_monitor`` (it would see the other
sessions' replication columns as NULL), a missing CA or a certificate that does not verify is a
``CollectorError``. A cluster that cannot be reached raises ``CollectorError`` too (the controls
become ``error``); a reachable cluster that is not (yet) a mirror is evidence, and fails the
controls.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .interface import Collector, CollectorError, Observation

HEARTBEAT_TABLE = "skydd_heartbeat"
POLL_INTERVAL = 0.2
CONNECT_TIMEOUT = 5

WALSENDERS = """
SELECT r.application_name, host(r.client_addr) AS client_addr, r.state, r.sync_state,
       r.sent_lsn::text, r.replay_lsn::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint AS byte_lag,
       extract(epoch FROM now() - r.reply_time)::float8 AS reply_age_s,
       extract(epoch FROM r.replay_lag)::float8 AS replay_lag_s,
       coalesce(s.ssl, false) AS ssl, s.version AS ssl_version
  FROM pg_stat_replication r LEFT JOIN pg_stat_ssl s ON s.pid = r.pid
 ORDER BY r.application_name"""
SLOTS = """
SELECT slot_name, slot_type, active, wal_status, restart_lsn::text
  FROM pg_replication_slots ORDER BY slot_name"""
RECEIVER = """
SELECT status, sender_host, sender_port, slot_name,
       extract(epoch FROM now() - last_msg_receipt_time)::float8 AS last_msg_receipt_age_s
  FROM pg_stat_wal_receiver"""


def _connect(db: Any, dbname: str, role: str) -> Any:
    import psycopg

    address = db.address or db.host
    where = f"{role} database {dbname!r} at {address}:{db.port}"
    if not db.ca_file:
        raise CollectorError(f"{where}: no ca_file in the inventory; Skydd connects with TLS "
                             "verify-full only")
    kw: dict[str, Any] = {}
    if db.password:
        from estate.secrets import resolve_secret
        try:
            kw["password"] = resolve_secret(db.password)
        except Exception as err:
            raise CollectorError(f"{role} database: {err}") from err
    try:
        conn = psycopg.connect(host=address, port=db.port, dbname=dbname, user=db.user,
                               sslmode="verify-full", sslrootcert=db.ca_file,
                               connect_timeout=CONNECT_TIMEOUT, autocommit=True,
                               application_name="skydd-collector", **kw)
    except psycopg.Error as err:
        raise CollectorError(f"{where} cannot be reached: {_first_line(err)}") from err
    try:
        who = _rows(conn, "SELECT current_user AS name, r.rolsuper AS superuser, "
                          "pg_has_role(current_user, 'pg_monitor', 'MEMBER') AS monitor "
                          "FROM pg_roles r WHERE r.rolname = current_user")[0]
    except psycopg.Error as err:
        conn.close()
        raise CollectorError(f"{where}: cannot read the login role: {_first_line(err)}") from err
    if who["superuser"] or not who["monitor"]:
        conn.close()
        why = "is a superuser" if who["superuser"] else "is not a member of pg_monitor"
        raise CollectorError(f"{where}: the login role {who['name']!r} {why}; Skydd collects as "
                             "a pg_monitor role that is no superuser")
    return conn


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _rows(conn: Any, sql: str, *args: Any) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(sql, args or None)
        names = [d.name for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


class ReplicationCollector(Collector):
    kinds = ("postgres.replication",)

    def __init__(self, system: Any, *, municipality: str | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(system.id, site=system.primary_site, municipality=municipality)
        self.system = system
        self.primary, self.mirror = system.primary_db, system.mirror_db
        self.rpo = float(system.rpo_seconds)
        self.timeout = self.rpo + 3 * CONNECT_TIMEOUT + 15
        self._monotonic, self._sleep = monotonic, sleep

    def collect(self) -> Iterable[Observation]:
        import psycopg

        primary = _connect(self.primary, self.primary.name, "primary")
        try:
            mirror, mirror_has_db = self._connect_mirror()
            try:
                data = self._observe(primary, mirror, mirror_has_db)
            except psycopg.Error as err:
                raise CollectorError(f"reading replication state failed: {err}".strip()) from err
            finally:
                mirror.close()
        finally:
            primary.close()
        yield Observation(self.kinds[0], self.system.id, data)

    def _connect_mirror(self) -> tuple[Any, bool]:
        """The mirror's copy of the database, or its ``postgres`` database when the copy is
        missing (an empty cluster: evidence of no mirror, not an unreachable source)."""
        import psycopg

        try:
            return _connect(self.mirror, self.mirror.name, "mirror"), True
        except CollectorError as err:
            cause = err.__cause__
            if isinstance(cause, psycopg.OperationalError) and "does not exist" in str(cause):
                return _connect(self.mirror, "postgres", "mirror"), False
            raise

    def _observe(self, primary: Any, mirror: Any, mirror_has_db: bool) -> dict[str, Any]:
        p_recovery = _rows(primary, "SELECT pg_is_in_recovery() AS r")[0]["r"]
        m = _rows(mirror, "SELECT pg_is_in_recovery() AS in_recovery, "
                          "current_setting('hot_standby') AS hot_standby")[0]
        heartbeat = self._heartbeat(primary, mirror, mirror_has_db and m["in_recovery"] is True)
        # after the heartbeat: the reply it caused is fresh. A primary in recovery has no WAL
        # position of its own to measure against: no senders (the controls fail).
        senders = [] if p_recovery else _rows(primary, WALSENDERS)
        slots = _rows(primary, SLOTS)
        receiver = _rows(mirror, RECEIVER)
        r = receiver[0] if receiver else {}
        return {
            "system": self.system.id,
            "rpo_seconds": self.system.rpo_seconds,
            "primary": {"site": self.system.primary_site, "host": self.primary.host,
                        "in_recovery": p_recovery, "walsenders": senders, "slots": slots},
            "mirror": {"site": self.system.mirror_site, "host": self.mirror.host,
                       "database_present": mirror_has_db, "in_recovery": m["in_recovery"],
                       "hot_standby": m["hot_standby"],
                       "receiver_status": r.get("status"), "sender_host": r.get("sender_host"),
                       "slot_name": r.get("slot_name"),
                       "last_msg_receipt_age_s": r.get("last_msg_receipt_age_s")},
            "heartbeat": heartbeat,
        }

    def _heartbeat(self, primary: Any, mirror: Any, poll: bool) -> dict[str, Any]:
        """Write a fresh nonce on the primary; wait up to the RPO for it on the mirror."""
        import psycopg

        nonce = secrets.token_hex(16)
        out: dict[str, Any] = {"written": False, "seen_on_mirror": False, "lag_s": None,
                               "waited_s": 0.0}
        try:
            _rows(primary, f"INSERT INTO {HEARTBEAT_TABLE} (id, nonce, written_at) "
                           "VALUES (1, %s, now()) ON CONFLICT (id) DO UPDATE "
                           "SET nonce = EXCLUDED.nonce, written_at = EXCLUDED.written_at "
                           "RETURNING id", nonce)
        except psycopg.Error as err:
            out["error"] = f"cannot write the heartbeat on the primary: {_first_line(err)}"
            return out
        out["written"] = True
        start = self._monotonic()
        if not poll:
            out["error"] = "the mirror is not a standby holding the database: not polled"
            return out
        while True:
            try:
                seen = _rows(mirror, f"SELECT nonce FROM {HEARTBEAT_TABLE} WHERE id = 1")
            except psycopg.Error as err:
                out["error"] = f"cannot read the heartbeat on the mirror: {_first_line(err)}"
                seen = []
                if not isinstance(err, psycopg.errors.UndefinedTable):
                    raise
            elapsed = self._monotonic() - start
            if seen and seen[0]["nonce"] == nonce:
                out.update(seen_on_mirror=True, lag_s=round(elapsed, 3), waited_s=round(elapsed, 3))
                out.pop("error", None)
                return out
            if elapsed >= self.rpo:
                out["waited_s"] = round(elapsed, 3)
                return out
            self._sleep(min(POLL_INTERVAL, max(self.rpo - elapsed, 0.0)))


def from_inventory(inventory: Any, home: Path) -> list[Collector]:
    munis = {s.id: s.municipality for s in inventory.sites}
    return [ReplicationCollector(s, municipality=s.municipality or munis.get(s.primary_site))
            for s in inventory.systems if s.primary_db is not None and s.mirror_db is not None]
