"""Named checks of level c (virtualization): the ESXi patch baseline, host services, time
synchronisation and the advanced settings and devices of virtual machines.

Evidence comes from ``audit.collectors.vsphere``: a host's parts that the API could not show are
absent from the data and named, with the reason, under ``unobservable``; a check that needs such a
part raises ``EvidenceMissing`` so the finding is ``error``, never ``pass``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from ..checks import Outcome, named_check, resolve
from ..errors import CatalogError, EvidenceMissing
from ..loader import read_yaml

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
_BASELINE_NAME = re.compile(r"^[a-z0-9-]+$")
_BUNDLE = re.compile(r"^VMware-ESXi-(\d+\.\d+)(?:U\d+[a-z]?)?-(\d+)-depot\.zip$")


@cache
def load_baseline(name: str) -> dict[str, list[dict[str, Any]]]:
    """A patch baseline from ``policies/data/<name>.yaml``: version → releases, oldest first."""
    if not _BASELINE_NAME.match(name):
        raise CatalogError(name, "params.baseline", "baseline names are lower-case words")
    path = DATA_DIR / f"{name}.yaml"
    return parse_baseline(read_yaml(path), str(path))


def parse_baseline(doc: Any, where: str) -> dict[str, list[dict[str, Any]]]:
    """Validate a loaded baseline document; ``where`` names it in errors."""
    if not isinstance(doc, Mapping) or doc.get("schema") != "skydd.esxi-baseline/1":
        raise CatalogError(where, "schema", "expected skydd.esxi-baseline/1")
    versions = doc.get("versions")
    if not isinstance(versions, Mapping) or not versions:
        raise CatalogError(where, "versions", "must map version to a list of releases")
    out: dict[str, list[dict[str, Any]]] = {}
    for version, releases in versions.items():
        if not isinstance(releases, list) or not releases:
            raise CatalogError(where, f"versions.{version}", "must be a non-empty list")
        for i, r in enumerate(releases):
            if not isinstance(r, Mapping) or not isinstance(r.get("build"), int) \
                    or not isinstance(r.get("fixes"), list) or not r.get("release"):
                raise CatalogError(where, f"versions.{version}[{i}]",
                                   "needs build (number), release, released and fixes")
            if "bundle" in r:
                _check_bundle(r["bundle"], str(version), r["build"], where,
                              f"versions.{version}[{i}].bundle")
        out[str(version)] = sorted((dict(r) for r in releases), key=lambda r: r["build"])
    return out


def _check_bundle(bundle: Any, version: str, build: int, where: str, key: str) -> None:
    m = _BUNDLE.match(bundle) if isinstance(bundle, str) else None
    if m is None:
        raise CatalogError(where, key, f"{bundle!r} is not an offline bundle name "
                                       "VMware-ESXi-<major>.<minor>[U<n>[letter]]-<build>-depot.zip")
    if m.group(1) != version or int(m.group(2)) != build:
        raise CatalogError(where, key, f"{bundle} is for ESXi {m.group(1)} build {m.group(2)}, "
                                       f"not {version} build {build}")


def _option_family(version: str) -> str:
    m = re.match(r"^(\d+)\.(\d+)", version)
    if not m:
        raise EvidenceMissing(f"product version {version!r} is not a version number")
    return f"{m.group(1)}.{m.group(2)}"


@named_check("esxi_patch_baseline")
def esxi_patch_baseline(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """The host's build is at or above the newest release of its version in the baseline."""
    version = str(resolve(data, ("product", "version"), "product.version"))
    build_text = str(resolve(data, ("product", "build"), "product.build"))
    if not build_text.isdigit():
        raise EvidenceMissing(f"product.build {build_text!r} is not a build number")
    build = int(build_text)
    baseline = load_baseline(str(params.get("baseline", "esxi-baseline")))
    family = _option_family(version)
    observed = {"product.version": version, "product.build": build}
    if family not in baseline:
        return Outcome(False, f"ESXi {version} (build {build}) is not in the patch baseline "
                              f"(supported: {', '.join(sorted(baseline))}): out of support", observed)
    releases = baseline[family]
    needed = releases[-1]
    missing = [r for r in releases if r["build"] > build]
    if not missing:
        return Outcome(True, f"ESXi {version} build {build} ≥ baseline {needed['build']} "
                             f"({needed['release']})", observed)
    advisories = sorted({a for r in missing for a in r["fixes"]})
    return Outcome(False, f"ESXi {version} build {build} is below the baseline: needs build "
                          f"{needed['build']} ({needed['release']}, released {needed['released']}); "
                          f"missing fixes for {', '.join(advisories) or 'no listed advisory'}",
                   {**observed, "needed_build": needed["build"], "advisories": advisories})


def _unobservable(data: Any, part: str) -> EvidenceMissing:
    why = data.get("unobservable", {}).get(part) if isinstance(data, Mapping) else None
    return EvidenceMissing(f"{part} could not be observed: {why}" if why
                           else f"evidence has no {part!r}")


@named_check("vsphere_service_off")
def vsphere_service_off(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """A host service (``TSM-SSH``, ``TSM`` …) has start policy ``off`` and is not running."""
    key = str(params["service"])
    services = data.get("services") if isinstance(data, Mapping) else None
    if not isinstance(services, Mapping):
        raise _unobservable(data, "services")
    svc = services.get(key)
    if svc is None:
        return Outcome(True, f"service {key} is not installed", {f"services.{key}": None})
    ok = svc.get("policy") == "off" and svc.get("running") is False
    return Outcome(ok, f"service {key}: policy {svc.get('policy')!r}, "
                       f"{'running' if svc.get('running') else 'stopped'}; expected off and stopped",
                   {f"services.{key}": dict(svc)})


@named_check("vsphere_ntp")
def vsphere_ntp(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """NTP servers are configured (a subset of ``params.servers`` when given) and ``ntpd`` runs."""
    ntp = data.get("ntp") if isinstance(data, Mapping) else None
    if not isinstance(ntp, Mapping):
        raise _unobservable(data, "ntp")
    servers = list(ntp.get("servers") or [])
    allowed = list(params.get("servers") or [])
    problems = []
    if not servers:
        problems.append("no NTP server configured")
    elif allowed and not set(servers) <= set(allowed):
        problems.append(f"servers {sorted(set(servers) - set(allowed))} are not authoritative")
    services = data.get("services")
    if not isinstance(services, Mapping):
        raise _unobservable(data, "services")
    ntpd = services.get("ntpd") or {}
    if ntpd.get("policy") != "on" or ntpd.get("running") is not True:
        problems.append(f"ntpd policy {ntpd.get('policy')!r}, running {ntpd.get('running')!r}")
    detail = "; ".join(problems) if problems else f"NTP from {', '.join(servers)}, ntpd running"
    return Outcome(not problems, detail, {"ntp.servers": servers, "services.ntpd": dict(ntpd)})


def _same(value: Any, want: Any) -> bool:
    return str(value).strip().lower() == str(want).strip().lower()


@named_check("vm_advanced_settings")
def vm_advanced_settings(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """Each ``params.settings`` key of the VM's ``extraConfig`` has the wanted value (compared
    as text, case-insensitively). Keys in ``params.absent_ok`` may also be absent (their default
    is the safe value); ``params.absent`` lists keys that must not exist."""
    extra = resolve(data, ("extra_config",), "extra_config")
    if not isinstance(extra, Mapping):
        raise EvidenceMissing("extra_config is not a mapping")
    want: Mapping[str, Any] = params.get("settings", {})
    absent_ok = set(params.get("absent_ok", []))
    bad: dict[str, Any] = {}
    for key, value in want.items():
        if key not in extra:
            if key not in absent_ok:
                bad[key] = None
        elif not _same(extra[key], value):
            bad[key] = extra[key]
    for key in params.get("absent", []):
        if key in extra:
            bad[key] = extra[key]
    observed = {k: extra.get(k) for k in [*want, *params.get("absent", [])]}
    if bad:
        shown = ", ".join(f"{k} = {'(not set)' if v is None else repr(v)}" for k, v in bad.items())
        wanted = ", ".join(f"{k} = {v!r}" for k, v in want.items())
        return Outcome(False, f"{shown}; expected {wanted or 'absent'}", observed)
    return Outcome(True, ", ".join(f"{k} = {extra.get(k, '(default)')!r}" for k in want)
                   or "no forbidden keys", observed)


@named_check("vm_no_devices")
def vm_no_devices(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """The VM has none of the device types in ``params.types`` (``VirtualFloppy`` …)."""
    devices = resolve(data, ("devices",), "devices")
    if not isinstance(devices, list) or not devices:
        raise EvidenceMissing("no devices observed on the virtual machine")
    forbidden = set(params.get("types", []))
    found = [d for d in devices if d.get("type") in forbidden]
    if found:
        listed = ", ".join(f"{d.get('label') or d['type']} ({d['type']})" for d in found)
        return Outcome(False, f"unneeded devices present: {listed}",
                       {"devices": [d.get("label") or d["type"] for d in found]})
    return Outcome(True, f"none of {', '.join(sorted(forbidden))} among {len(devices)} devices",
                   {"devices": len(devices)})
