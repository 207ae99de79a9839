"""Audit history (``$SKYDD_HOME/history.db``, SQLite; PostgreSQL by URL) and drift between audits."""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table, create_engine, select
from sqlalchemy.engine import Engine

from policies.checks import parse_time

_meta = MetaData()
audits = Table(
    "audits", _meta,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), unique=True, nullable=False),
    Column("inventory", String(200), nullable=False, index=True),
    Column("generated_at", DateTime(timezone=True), nullable=False),
    Column("status", String(20), nullable=False),
    Column("statuses", JSON, nullable=False),  # {"control|target": status}
)

_FAILING = ("fail", "error")


class History:
    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url, future=True)
        _meta.create_all(self.engine)

    def previous(self, inventory: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(audits).where(audits.c.inventory == inventory)
                               .order_by(audits.c.seq.desc()).limit(1)).mappings().first()
        if row is None:
            return None
        statuses = row["statuses"]
        return {"id": row["id"], "generated_at": row["generated_at"],
                "statuses": json.loads(statuses) if isinstance(statuses, str) else statuses}

    def record(self, report: Mapping[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(audits.insert().values(
                id=report["id"], inventory=report["inventory"]["name"],
                generated_at=parse_time(report["generated_at"]),
                status=report["summary"]["status"], statuses=statuses_of(report["findings"])))


def statuses_of(findings: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    return {f"{f['control']}|{f['target']}": f["status"] for f in findings}


def drift(previous: Mapping[str, Any] | None, findings: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What is newly failing and newly fixed since the previous audit of the same inventory."""
    if previous is None:
        return {"previous": None, "newly_failing": [], "newly_fixed": []}
    before, now = previous["statuses"], statuses_of(findings)
    failing = sorted(k for k, s in now.items() if s in _FAILING and before.get(k) not in _FAILING)
    fixed = sorted(k for k, s in now.items() if s == "pass" and before.get(k) in _FAILING)
    at = previous["generated_at"]
    return {"previous": {"id": previous["id"], "generated_at": at.isoformat() if hasattr(at, "isoformat") else at},
            "newly_failing": [dict(zip(("control", "target"), k.split("|", 1))) for k in failing],
            "newly_fixed": [dict(zip(("control", "target"), k.split("|", 1))) for k in fixed]}
