"""The strict catalog loader: one folder per control, unknown keys rejected, errors name file and key."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from estate.documents import DocumentError
from estate.documents import read_yaml as read_document

from .checks import parse_check
from .errors import CatalogError
from .model import AppliesTo, Control, Level, Remediation, Severity

CATALOG_DIR = Path(__file__).parent / "catalog"
FRAMEWORKS_DIR = Path(__file__).parent / "frameworks"
PROFILES_DIR = Path(__file__).parent / "profiles"

_REQUIRED = ("id", "level", "title", "description", "rationale", "severity", "references",
             "applies_to", "check", "remediation")
_OPTIONAL: tuple[str, ...] = ()
_FIXTURE_STATUSES = ("pass", "fail", "error", "notapplicable", "manual")


def read_yaml(path: Path) -> Any:
    """Load one YAML file through ``estate.documents`` (safe loader; size, depth, aliases and tags
    screened); errors carry file and line."""
    try:
        return read_document(path)
    except DocumentError as err:
        raise CatalogError(str(path), f"line {err.line}" if err.line else None, err.problem) from err


@dataclass(frozen=True)
class Framework:
    id: str
    title: str
    requirements: Mapping[str, str]


@dataclass(frozen=True)
class Profile:
    """A named tailoring of the catalog: the controls it leaves out, each with the reason."""

    id: str
    title: str
    description: str
    exclude: Mapping[str, str]


@dataclass(frozen=True)
class Fixture:
    control: Control
    name: str
    expected: str
    data: Any


@dataclass(frozen=True)
class Catalog:
    controls: tuple[Control, ...]
    frameworks: Mapping[str, Framework]
    digest: str
    version: str = "1"
    profiles: Mapping[str, Profile] = field(default_factory=dict)

    def by_id(self) -> dict[str, Control]:
        return {c.id: c for c in self.controls}

    def reference_title(self, framework: str, requirement: str) -> str:
        fw = self.frameworks.get(framework)
        return fw.requirements.get(requirement, "") if fw else ""


def load_frameworks(directory: Path = FRAMEWORKS_DIR) -> dict[str, Framework]:
    frameworks: dict[str, Framework] = {}
    for path in sorted(directory.glob("*.yaml")):
        doc = read_yaml(path)
        if not isinstance(doc, Mapping) or set(doc) != {"id", "title", "requirements"}:
            raise CatalogError(str(path), None, "needs exactly the keys id, title, requirements")
        reqs = doc["requirements"]
        if not isinstance(reqs, Mapping) or not all(isinstance(v, str) for v in reqs.values()):
            raise CatalogError(str(path), "requirements", "must map requirement id to title")
        frameworks[str(doc["id"])] = Framework(str(doc["id"]), str(doc["title"]),
                                               {str(k): v for k, v in reqs.items()})
    return frameworks


def load_profiles(directory: Path, known: set[str]) -> dict[str, Profile]:
    profiles: dict[str, Profile] = {}
    for path in sorted(directory.glob("*.yaml")):
        doc = read_yaml(path)
        if not isinstance(doc, Mapping) or set(doc) != {"id", "title", "description", "exclude"}:
            raise CatalogError(str(path), None, "needs exactly the keys id, title, description, exclude")
        if doc["id"] != path.stem:
            raise CatalogError(str(path), "id", f"must match the file name {path.stem!r}")
        exclude = doc["exclude"]
        if not isinstance(exclude, Mapping):
            raise CatalogError(str(path), "exclude", "must map control id to the reason")
        for cid, why in exclude.items():
            if cid not in known:
                raise CatalogError(str(path), f"exclude.{cid}", "unknown control")
            if not isinstance(why, str) or not why.strip():
                raise CatalogError(str(path), f"exclude.{cid}", "needs the reason it is left out")
        profiles[path.stem] = Profile(path.stem, str(doc["title"]), str(doc["description"]).strip(),
                                      {str(k): v.strip() for k, v in exclude.items()})
    return profiles


def load_catalog(directory: Path = CATALOG_DIR,
                 frameworks_dir: Path = FRAMEWORKS_DIR,
                 profiles_dir: Path = PROFILES_DIR) -> Catalog:
    """Load every ``<level>/<control-id>/control.yaml`` under ``directory``."""
    frameworks = load_frameworks(frameworks_dir)
    controls: list[Control] = []
    digest = hashlib.sha256()
    paths = sorted(directory.glob("*/*/control.yaml"))
    if not paths:
        raise CatalogError(str(directory), None, "no controls found")
    for path in paths:
        controls.append(parse_control(read_yaml(path), path, frameworks))  # size-checked first
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes())
    seen: set[str] = set()
    for c in controls:
        if c.id in seen:
            raise CatalogError(c.path, "id", f"duplicate control id {c.id!r}")
        seen.add(c.id)
    profiles = load_profiles(profiles_dir, seen)
    for path in sorted(profiles_dir.glob("*.yaml")):
        digest.update(b"profile\0" + path.name.encode() + b"\0" + path.read_bytes())
    return Catalog(tuple(controls), frameworks, "sha256:" + digest.hexdigest(), profiles=profiles)


def parse_control(doc: Any, path: Path, frameworks: Mapping[str, Framework]) -> Control:
    where = str(path)
    if not isinstance(doc, Mapping):
        raise CatalogError(where, None, "a control must be a mapping")
    for key in doc:
        if key not in _REQUIRED and key not in _OPTIONAL:
            raise CatalogError(where, str(key), "unknown key")
    for key in _REQUIRED:
        if key not in doc:
            raise CatalogError(where, key, "missing field")
    cid = _text(doc, "id", where)
    try:
        level = Level(doc["level"])
    except ValueError as err:
        raise CatalogError(where, "level", f"unknown level {doc['level']!r} (a–e)") from err
    if not cid.startswith(f"{level.value}."):
        raise CatalogError(where, "id", f"must start with its level: '{level.value}.'")
    if path.parent.name != cid or path.parent.parent.name != level.value:
        raise CatalogError(where, "id", f"must match its folder <level>/<id>, got {cid!r}")
    try:
        severity = Severity(doc["severity"])
    except ValueError as err:
        raise CatalogError(where, "severity", "one of low, medium, high, critical") from err
    return Control(
        id=cid, level=level, title=_text(doc, "title", where),
        description=_text(doc, "description", where), rationale=_text(doc, "rationale", where),
        severity=severity, references=_references(doc["references"], where, frameworks),
        applies_to=_applies_to(doc["applies_to"], where),
        check=parse_check(doc["check"], where),
        remediation=_remediation(doc["remediation"], where), path=where)


def _text(doc: Mapping[str, Any], key: str, where: str) -> str:
    value = doc[key]
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(where, key, "must be non-empty text")
    return value.strip()


def _references(value: Any, where: str,
                frameworks: Mapping[str, Framework]) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping) or not value:
        raise CatalogError(where, "references", "must map framework to a list of requirement ids")
    refs: dict[str, tuple[str, ...]] = {}
    for fw, ids in value.items():
        key = f"references.{fw}"
        if fw not in frameworks:
            raise CatalogError(where, key, f"unknown framework (known: {', '.join(sorted(frameworks))})")
        if not isinstance(ids, list) or not ids:
            raise CatalogError(where, key, "must be a non-empty list")
        for rid in ids:
            if str(rid) not in frameworks[fw].requirements:
                raise CatalogError(where, key, f"unknown requirement {rid!r} in {fw}")
        refs[str(fw)] = tuple(str(r) for r in ids)
    for needed in ("iso27001-2022", "nis2"):
        if needed not in refs:
            raise CatalogError(where, f"references.{needed}", "missing field")
    return refs


def _applies_to(value: Any, where: str) -> AppliesTo:
    if not isinstance(value, Mapping):
        raise CatalogError(where, "applies_to", "must be a mapping with 'evidence'")
    for key in value:
        if key not in ("evidence", "when"):
            raise CatalogError(where, f"applies_to.{key}", "unknown key")
    if not isinstance(value.get("evidence"), str):
        raise CatalogError(where, "applies_to.evidence", "missing field")
    when = parse_check(value["when"], where, "applies_to.when") if "when" in value else None
    return AppliesTo(value["evidence"], when)


def _remediation(value: Any, where: str) -> Remediation | None:
    if value is None:
        return None  # manual controls: nothing to apply
    if not isinstance(value, Mapping):
        raise CatalogError(where, "remediation", "must be a mapping or null")
    for key in value:
        if key not in ("playbook", "tags", "disruptive"):
            raise CatalogError(where, f"remediation.{key}", "unknown key")
    if not isinstance(value.get("playbook"), str):
        raise CatalogError(where, "remediation.playbook", "missing field")
    tags = value.get("tags")
    if not isinstance(tags, list) or not tags or not all(isinstance(t, str) for t in tags):
        raise CatalogError(where, "remediation.tags", "must be a non-empty list of tags")
    disruptive = value.get("disruptive", False)
    if not isinstance(disruptive, bool):
        raise CatalogError(where, "remediation.disruptive", "must be true or false")
    return Remediation(value["playbook"], tuple(tags), disruptive)


def load_fixtures(catalog: Catalog) -> list[Fixture]:
    """Every ``fixtures/<name>.<status>.yaml`` beside a control."""
    out: list[Fixture] = []
    for control in catalog.controls:
        for path in sorted((Path(control.path).parent / "fixtures").glob("*.yaml")):
            name, _, expected = path.stem.rpartition(".")
            if expected not in _FIXTURE_STATUSES:
                raise CatalogError(str(path), None,
                                   f"fixture name must end in .{'|.'.join(_FIXTURE_STATUSES)}.yaml")
            out.append(Fixture(control, name, expected, read_yaml(path)))
    return out
