"""Training evidence (kind ``training.users``): every user of the realm with their municipality
groups and the social-care role (Keycloak admin API), joined with the courses the role requires
and each user's completions (the training store). The checks judge validity at their own ``at``:
this collector reports completion times and validity periods, never "current"."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from identity.training_enforce import DirectoryError, connect, read_directory
from identity.training_store import SOCIALCARE_ROLE, TrainingStore, TrainingStoreError, redact_url

from .interface import Collector, CollectorError, Observation


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso(t: datetime | None) -> str | None:
    return _stamp(t) if t else None


class TrainingCollector(Collector):
    kinds = ("training.users",)
    timeout = 60.0

    def __init__(self, source_id: str, *, store_url: str, keycloak: dict[str, Any],
                 groups: list[str], role: str = SOCIALCARE_ROLE, **kw: Any) -> None:
        super().__init__(source_id, **kw)
        self.store_url, self.keycloak, self.groups, self.role = store_url, keycloak, groups, role

    def collect(self) -> Iterable[Observation]:
        try:
            store = TrainingStore(self.store_url, create=False)
        except TrainingStoreError as err:
            raise CollectorError(str(err)) from err
        try:
            kc = self.keycloak
            from estate.errors import InputError
            from estate.secrets import resolve_secret
            try:
                user, password = resolve_secret(kc["admin_username"]), resolve_secret(kc["admin_password"])
            except InputError as err:
                raise CollectorError(str(err)) from err
            try:
                admin = connect(kc["url"], kc["realm"], user, password, kc.get("ca_file"))
                directory = read_directory(admin, self.groups, self.role)
            except DirectoryError as err:
                raise CollectorError(str(err)) from err
            data = self.snapshot(store, directory)
        except TrainingStoreError as err:
            raise CollectorError(str(err)) from err
        finally:
            store.close()
        yield Observation(self.kinds[0], self.source_id, data)

    def snapshot(self, store: TrainingStore, directory: list[Any]) -> dict[str, Any]:
        required = store.requirements().get(self.role, [])
        done = store.completions()
        registered = store.users()
        users = []
        for d in directory:
            st = registered.get(d.username)
            mine = done.get(d.username, {})
            users.append({
                "id": d.username, "hsa_id": d.hsa_id, "enabled": d.enabled, "groups": list(d.groups),
                "has_role": d.has_role, "direct_role": d.direct_role, "can_reach": d.can_reach,
                "created_at": _iso(d.created_at), "first_login_at": _iso(d.first_login_at),
                "in_store": st is not None and st.active,
                "courses": [{"id": c.code, "validity_days": c.validity_days,
                             "completions": sorted(_stamp(t) for t in mine.get(c.code, []))}
                            for c in required]})
        return {
            "realm": self.keycloak["realm"], "role": self.role, "groups": self.groups,
            "store": {"url": redact_url(self.store_url),
                      "last_import_at": _iso(store.last_event("import")),
                      "last_sync_at": _iso(store.last_event("sync")),
                      "last_enforcement_at": _iso(store.last_event("enforcement"))},
            "required_courses": [{"id": c.code, "title": c.title, "validity_days": c.validity_days}
                                 for c in required],
            "users": users,
        }


def from_inventory(inventory: Any, home: Path) -> list[Collector]:
    idp = inventory.identity_provider
    if idp is None:
        return []
    system = next((s for s in inventory.systems if s.oidc_client), None)
    target = system.id if system else idp.realm
    munis = [m.id for m in inventory.municipalities]
    return [TrainingCollector(
        target, store_url=inventory.training_store.url,
        keycloak={"url": idp.url, "realm": idp.realm, "admin_username": idp.admin_username,
                  "admin_password": idp.admin_password, "ca_file": idp.ca_file},
        groups=munis, site=system.primary_site if system else None,
        municipality=system.municipality if system else None)]
