"""Officer attestations: one ``attestation`` evidence per manual control of the catalog.

The evidence target is the control id (the engine gives a manual control only the evidence whose
target is its id) and the data carries ``control`` too. A control without a valid attestation —
none recorded, expired records aside, a signature that does not verify, a record the signed audit
log does not name, an audit log that does not verify — gets unobserved evidence naming why, so its
finding is ``manual``, never ``pass``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from estate.settings import Settings

from ..attestations import AttestationStore
from ..records import read_signed_log
from ..signing import load_home_public_key
from .interface import Collector, Observation


class AttestationCollector(Collector):
    kinds = ("attestation",)
    timeout = 10.0

    def __init__(self, home: Path, controls: Iterable[str]) -> None:
        super().__init__("attestations")
        self.home = home
        self.controls = sorted(set(controls))

    def collect(self) -> Iterable[Observation]:
        store = AttestationStore(self.home)
        try:
            public_key = load_home_public_key(self.home)
        except FileNotFoundError:
            public_key = None
        signed = read_signed_log(Settings(self.home).audit_log, public_key)
        for control in sorted(set(self.controls) | set(store.controls())):
            record, problem = store.latest(control, public_key, signed)
            if record is None:
                yield Observation("attestation", control, {"control": control, "attested": False},
                                  error=problem)
                continue
            yield Observation("attestation", control, {
                "control": control, "attested": True, "officer": record.officer,
                "attested_at": record.attested_at, "expires_at": record.expires_at,
                "evidence_file": record.evidence_file, "evidence_digest": record.evidence_digest,
                "key_id": record.key_id})


def manual_controls() -> list[str]:
    from policies import load_catalog

    return [c.id for c in load_catalog().controls if c.manual]


def from_inventory(inventory: Any, home: Path) -> list[Collector]:
    return [AttestationCollector(home, manual_controls())]
