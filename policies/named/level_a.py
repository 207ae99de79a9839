"""Level a (redundancy): checks over ``postgres.replication`` evidence.

The evidence shape (one per system with a database, written by audit/collectors/postgres.py)::

    system, rpo_seconds,
    primary: {site, walsenders: [{application_name, state, byte_lag, reply_age_s, ssl}], slots: [...]},
    mirror:  {site, in_recovery, hot_standby, receiver_status, last_msg_receipt_age_s},
    heartbeat: {seen_on_mirror, lag_s}
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..checks import Outcome, named_check, resolve
from ..errors import EvidenceMissing


def _get(data: Any, *path: str) -> Any:
    return resolve(data, path, ".".join(path))


@named_check("mirror_at_distinct_site")
def mirror_at_distinct_site(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    primary, mirror = _get(data, "primary", "site"), _get(data, "mirror", "site")
    in_recovery = _get(data, "mirror", "in_recovery")
    observed = {"primary.site": primary, "mirror.site": mirror, "mirror.in_recovery": in_recovery}
    if primary == mirror:
        return Outcome(False, f"mirror is at the primary's own site {primary!r}", observed)
    if in_recovery is not True:
        return Outcome(False, f"the database at {mirror!r} is not a standby (in_recovery={in_recovery!r})",
                       observed)
    return Outcome(True, f"standby at {mirror!r}, primary at {primary!r}", observed)


@named_check("mirror_within_rpo")
def mirror_within_rpo(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    rpo = float(_get(data, "rpo_seconds"))
    max_bytes = int(params.get("max_byte_lag", 16 * 1024 * 1024))
    name = str(params.get("application_name", "site4"))
    senders = _get(data, "primary", "walsenders")
    if not isinstance(senders, list):
        raise EvidenceMissing("primary.walsenders is not a list")
    sender = next((s for s in senders if isinstance(s, Mapping) and s.get("application_name") == name), None)
    seen = _get(data, "heartbeat", "seen_on_mirror")
    hb_lag = data["heartbeat"].get("lag_s")
    observed: dict[str, Any] = {"rpo_seconds": rpo, "heartbeat.seen_on_mirror": seen,
                                "heartbeat.lag_s": hb_lag}
    problems = []
    if sender is None:
        problems.append(f"no WAL sender for {name!r} on the primary")
    else:
        byte_lag, reply_age = sender.get("byte_lag"), sender.get("reply_age_s")
        observed.update({"byte_lag": byte_lag, "reply_age_s": reply_age})
        if byte_lag is None or reply_age is None:
            raise EvidenceMissing("WAL sender without byte_lag or reply_age_s")
        if byte_lag > max_bytes:
            problems.append(f"byte lag {byte_lag} > {max_bytes}")
        if reply_age > rpo:
            problems.append(f"last reply {reply_age:.1f} s ago > RPO {rpo:g} s")
    if seen is not True:
        problems.append(f"heartbeat written on the primary not seen on the mirror within {rpo:g} s")
    elif hb_lag is None or hb_lag > rpo:
        problems.append(f"heartbeat arrived after {hb_lag} s > RPO {rpo:g} s")
    if problems:
        return Outcome(False, "; ".join(problems), observed)
    return Outcome(True, f"byte lag {observed['byte_lag']}, reply {observed['reply_age_s']:.1f} s, "
                         f"heartbeat {hb_lag:.1f} s, all within RPO {rpo:g} s", observed)


def _sender(data: Any, name: str) -> Mapping[str, Any] | None:
    senders = _get(data, "primary", "walsenders")
    if not isinstance(senders, list):
        raise EvidenceMissing("primary.walsenders is not a list")
    return next((s for s in senders if isinstance(s, Mapping) and s.get("application_name") == name),
                None)


# An empty pg_stat_replication or pg_replication_slots is an observation (no replication), so
# these controls fail on it; only evidence that was not collected at all is an error.

@named_check("replication_streaming")
def replication_streaming(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    name = str(params.get("application_name", "site4"))
    sender = _sender(data, name)
    receiver = _get(data, "mirror", "receiver_status")
    observed = {"walsender.state": sender.get("state") if sender else None,
                "mirror.receiver_status": receiver}
    if sender is None:
        return Outcome(False, f"no WAL sender for {name!r} on the primary: the mirror does not "
                              "replicate", observed)
    if sender.get("state") != "streaming":
        return Outcome(False, f"the WAL sender for {name!r} is {sender.get('state')!r}, not streaming",
                       observed)
    if receiver != "streaming":
        return Outcome(False, f"the mirror's WAL receiver is {receiver!r}, not streaming", observed)
    return Outcome(True, f"{name!r} streaming, seen from the primary and the mirror", observed)


@named_check("replication_encrypted")
def replication_encrypted(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    name = str(params.get("application_name", "site4"))
    sender = _sender(data, name)
    if sender is None:
        return Outcome(False, f"no replication connection for {name!r} to judge: the mirror does "
                              "not replicate", {"walsender": None})
    observed = {"ssl": sender.get("ssl"), "ssl_version": sender.get("ssl_version")}
    if sender.get("ssl") is not True:
        return Outcome(False, f"the replication connection of {name!r} is not encrypted", observed)
    return Outcome(True, f"the replication connection of {name!r} uses TLS "
                         f"({sender.get('ssl_version') or 'version not reported'})", observed)


@named_check("replication_slot")
def replication_slot(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    name = str(params.get("slot_name", "site4"))
    ok_status = tuple(params.get("wal_status", ("reserved", "extended")))
    slots = _get(data, "primary", "slots")
    if not isinstance(slots, list):
        raise EvidenceMissing("primary.slots is not a list")
    slot = next((s for s in slots if isinstance(s, Mapping) and s.get("slot_name") == name), None)
    if slot is None:
        return Outcome(False, f"no replication slot {name!r} on the primary",
                       {"slots": [s.get("slot_name") for s in slots if isinstance(s, Mapping)]})
    observed = {"active": slot.get("active"), "wal_status": slot.get("wal_status"),
                "slot_type": slot.get("slot_type")}
    if slot.get("slot_type", "physical") != "physical":
        return Outcome(False, f"slot {name!r} is {slot.get('slot_type')}, not physical", observed)
    if slot.get("active") is not True:
        return Outcome(False, f"slot {name!r} is not in use by the mirror", observed)
    if slot.get("wal_status") not in ok_status:
        return Outcome(False, f"slot {name!r} has WAL status {slot.get('wal_status')!r}", observed)
    return Outcome(True, f"slot {name!r} active, WAL {slot.get('wal_status')}", observed)
