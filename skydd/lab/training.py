"""Lab training store: SQLite at the inventory's ``training_store.url`` (``$SKYDD_HOME/training.db``),
seeded with the course catalogue (``training-courses.json``), the realm's staff and an LMS export
in which some staff are current, some expired and some have never taken a required course.

The staff come from the running lab Keycloak (start it first). Who is in which state is fixed
by the order within each municipality, so lab tests know it: the 2nd member of each group has
expired training, the 4th never completed it, everyone else (and the probe users) is current.
Nothing is synced with the directory and enforcement has never run: that is level e as found.
"""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from estate.errors import InputError

from .errors import LabError
from .service import LabService, Progress

CATALOGUE = Path(__file__).with_name("training-courses.json")
EXPIRED_INDEX, MISSING_INDEX = 1, 3  # 0-based position in each municipality group
READY_TIMEOUT = 60.0  # Keycloak may still be bootstrapping its admin account


def seed_states(staff: dict[str, list[str]]) -> dict[str, str]:
    """username → "current" | "expired" | "missing", from each group's sorted members."""
    states: dict[str, str] = {}
    for members in staff.values():
        regular = sorted(m for m in members if not m.startswith("probe."))
        for i, name in enumerate(regular):
            states[name] = ("expired" if i == EXPIRED_INDEX else
                            "missing" if i == MISSING_INDEX else "current")
        for name in members:
            states.setdefault(name, "current")
    return states


def lms_export(states: dict[str, str], courses: list[tuple[str, int]], at: datetime) -> str:
    """A CSV export as an LMS would send it: current staff completed recently, expired staff
    one validity period plus 40 days ago, missing staff not at all."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["username", "course", "completed_at", "result"])
    for name, state in sorted(states.items()):
        for code, days in courses:
            if state == "current":
                when = at - timedelta(days=30)
            elif state == "expired":
                when = at - timedelta(days=days + 40)
            else:
                continue
            w.writerow([name, code, when.strftime("%Y-%m-%dT%H:%M:%SZ"), "passed"])
    return buf.getvalue()


class Service(LabService):
    name = "training"

    @property
    def marker(self) -> Path:
        return self.state_dir / "seeded"

    def up(self, progress: Progress) -> None:
        from estate.secrets import resolve_secret
        from identity.training_enforce import DirectoryError, connect, read_directory
        from identity.training_import import ImportRejected, import_file
        from identity.training_store import TrainingStore, TrainingStoreError

        inv = self._inventory()
        if self.marker.exists():
            try:
                TrainingStore(inv.training_store.url, create=False).close()
                progress("store already seeded")
                return
            except TrainingStoreError:
                self.marker.unlink()
        idp = inv.identity_provider
        if idp is None:
            raise LabError("the lab inventory has no identity_provider to take staff from")
        progress("reading the realm's staff from Keycloak")
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                admin = connect(idp.url, idp.realm, resolve_secret(idp.admin_username),
                                resolve_secret(idp.admin_password), idp.ca_file)
                directory = read_directory(admin, [m.id for m in inv.municipalities])
                break
            except (DirectoryError, InputError) as err:
                if time.monotonic() > deadline:
                    raise LabError(f"training seeds the realm's staff: start keycloak first ({err})") from err
                progress(f"waiting for Keycloak: {err}")
                time.sleep(3)
        staff: dict[str, list[str]] = {}
        for u in directory:
            if u.groups and u.has_role:
                staff.setdefault(u.groups[0], []).append(u.username)
        if not staff:
            raise LabError("the realm has no staff in municipality groups with the role")
        at = datetime.now(UTC)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            store = TrainingStore(inv.training_store.url)
        except TrainingStoreError as err:
            raise LabError(str(err)) from err
        try:
            progress("loading the course catalogue")
            import_file(store, CATALOGUE, "json", at)
            with store.transaction() as s:
                for u in directory:
                    if u.groups and u.has_role:
                        store.register_user(s, u.username, at, hsa_id=u.hsa_id,
                                            municipality=u.groups[0], roles=["socialcare-user"])
            courses = [(c.code, c.validity_days) for c in store.requirements().get("socialcare-user", [])]
            states = seed_states(staff)
            export = self.state_dir / "lms-export.csv"
            export.write_text(lms_export(states, courses, at), encoding="utf-8")
            progress(f"importing {export.name}: " + ", ".join(
                f"{sum(1 for s in states.values() if s == k)} {k}" for k in ("current", "expired", "missing")))
            import_file(store, export, "csv", at)
        except (ImportRejected, TrainingStoreError) as err:
            raise LabError(f"seeding the training store: {err}") from err
        finally:
            store.close()
        self.marker.write_text(at.isoformat() + "\n")

    def down(self, progress: Progress) -> None:
        from sqlalchemy.engine import make_url

        inv = self._inventory()
        url = make_url(inv.training_store.url)
        if url.get_backend_name() == "sqlite" and url.database:
            db = Path(url.database)
            if self.home.resolve() in db.resolve().parents:
                for p in (db, db.with_name(db.name + "-journal"), db.with_name(db.name + "-wal")):
                    p.unlink(missing_ok=True)
                progress(f"removed {db}")
        self.marker.unlink(missing_ok=True)
        (self.state_dir / "lms-export.csv").unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        from identity.training_store import TrainingStore, TrainingStoreError, redact_url

        try:
            url = self._inventory().training_store.url
        except LabError as err:
            return {"state": "down", "endpoint": None, "error": str(err)}
        try:
            TrainingStore(url, create=False).close()
            up = self.marker.exists()
        except TrainingStoreError:
            up = False
        return {"state": "up" if up else "down", "endpoint": redact_url(url),
                "lms_export": str(self.state_dir / "lms-export.csv")}
