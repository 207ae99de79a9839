"""The waiver store at ``$SKYDD_HOME/waivers.json``: four eyes, expiry in UTC, atomic writes."""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Iterator

from estate.canonical import rfc3339
from estate.errors import InputError
from policies import Waiver
from policies.checks import parse_time


class WaiverStore:
    def __init__(self, home: Path) -> None:
        self.path = home / "waivers.json"

    def all(self) -> list[Waiver]:
        if not self.path.exists():
            return []
        try:
            docs = json.loads(self.path.read_text(encoding="utf-8"))
            return [_from_dict(d) for d in docs]
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(f"{self.path}: corrupt waiver store ({err})") from err

    def request(self, control: str, target: str | None, reason: str, requester: str,
                expires_at: datetime, at: datetime) -> Waiver:
        if expires_at.tzinfo is None:
            raise InputError("--expires must carry a timezone, e.g. 2027-01-31T00:00:00Z")
        if expires_at <= at:
            raise InputError(f"--expires {rfc3339(expires_at)} is already in the past")
        if not reason.strip() or not requester.strip():
            raise InputError("a waiver needs a reason and a requester")
        w = Waiver(id="w-" + uuid.uuid4().hex[:10], control=control, target=target,
                   reason=reason.strip(), requester=requester.strip(), requested_at=at,
                   expires_at=expires_at)
        with self._locked() as waivers:
            waivers.append(w)
        return w

    def approve(self, waiver_id: str, approver: str, at: datetime) -> Waiver:
        with self._locked() as waivers:
            for i, w in enumerate(waivers):
                if w.id != waiver_id:
                    continue
                if w.approver is not None:
                    raise InputError(f"waiver {waiver_id} is already approved by {w.approver}")
                if approver.strip().casefold() == w.requester.casefold():
                    raise InputError(f"waiver {waiver_id}: the approver must not be the requester")
                if at >= w.expires_at:
                    raise InputError(f"waiver {waiver_id} expired at {rfc3339(w.expires_at)}")
                approved = Waiver(**{**w.__dict__, "approver": approver.strip(), "approved_at": at})
                waivers[i] = approved
                return approved
        raise InputError(f"no waiver {waiver_id!r}")

    @contextmanager
    def _locked(self) -> Iterator[list[Waiver]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            waivers = self.all()
            yield waivers
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps([w.to_dict() for w in waivers], indent=2) + "\n",
                           encoding="utf-8")
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            tmp.replace(self.path)


def _from_dict(d: dict) -> Waiver:
    return Waiver(id=d["id"], control=d["control"], target=d.get("target"), reason=d["reason"],
                  requester=d["requester"], requested_at=parse_time(d["requested_at"]),
                  expires_at=parse_time(d["expires_at"]), approver=d.get("approver"),
                  approved_at=parse_time(d["approved_at"]) if d.get("approved_at") else None)


def now() -> datetime:
    return datetime.now(UTC)
