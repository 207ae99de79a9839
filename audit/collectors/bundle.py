"""Replay evidence captured earlier, so an audit can run offline.

A bundle is a folder: ``manifest.json`` (``{"schema": "skydd.bundle/1", ...}``) and one JSON file
per piece of evidence under ``evidence/<kind>/<target>.json`` in the form ``Evidence.to_dict``.
Each file's digest is checked; a mismatch makes that evidence an ``error``, never a pass.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from estate.canonical import digest_of, rfc3339
from policies import Evidence

from ..errors import BundleError
from .interface import Collector, Observation

SCHEMA = "skydd.bundle/1"


class BundleCollector(Collector):
    timeout = 30.0

    def __init__(self, path: Path) -> None:
        super().__init__(path.name)
        manifest = path / "manifest.json"
        try:
            doc = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise BundleError(f"{manifest}: not an evidence bundle ({err})") from err
        if doc.get("schema") != SCHEMA:
            raise BundleError(f"{manifest}: schema must be {SCHEMA!r}")
        self.path = path
        self.files = sorted((path / "evidence").glob("*/*.json"))
        if not self.files:
            raise BundleError(f"{path}: the bundle holds no evidence")
        self.kinds = tuple(sorted({f.parent.name for f in self.files}))  # type: ignore[misc]

    def collect(self) -> Iterable[Observation]:
        for f in self.files:
            yield _read(f)


def _read(f: Path) -> Observation:
    from policies.checks import parse_time
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
        kind, target, source = doc["kind"], doc["target"], doc["source"]
        at = parse_time(doc["collected_at"])
    except Exception as err:  # malformed file: that one piece is unobservable
        return Observation(f.parent.name, f.stem, {}, error=f"unreadable evidence {f.name}: {err}",
                           source=f"bundle:{f}")
    common = dict(site=doc.get("site"), municipality=doc.get("municipality"), source=source,
                  collected_at=at)
    if "error" in doc:
        return Observation(kind, target, {}, error=str(doc["error"]), **common)
    data = doc.get("data")
    if digest_of(data) != doc.get("digest"):
        return Observation(kind, target, {}, error=f"digest mismatch in {f.name}: evidence altered",
                           **common)
    return Observation(kind, target, data, **common)


def write_bundle(evidence: Sequence[Evidence], path: Path, *, note: str = "") -> None:
    """Capture evidence into a new bundle folder (written beside, then renamed into place)."""
    if path.exists():
        raise BundleError(f"{path} exists: a bundle is never overwritten")
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    for e in evidence:
        out = tmp / "evidence" / e.kind / f"{e.target}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(e.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                       encoding="utf-8")
    manifest = {"schema": SCHEMA, "note": note, "count": len(evidence),
                "captured_at": rfc3339(max(e.collected_at for e in evidence)) if evidence else None}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    tmp.rename(path)


__all__ = ["SCHEMA", "BundleCollector", "write_bundle"]
