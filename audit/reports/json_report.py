"""``report.json`` (schema ``skydd.report/1``): built from findings, signed with Ed25519 over the
canonical JSON of everything but ``signature``, verified byte for byte.

Verification trusts only keys the caller pins (never the ``report.pub.pem`` written beside a
report, which is a convenience copy for others) and reads the file strictly: UTF-8, one JSON
object with no duplicate keys, no NaN or Infinity, nothing after it, and the whole file in one of
the two canonical forms (``render_report_file``: sorted keys, two-space indent, UTF-8 unescaped,
one final newline; or ``canonical_json`` itself, optionally newline-terminated). So every JSON
parser reads exactly what was signed: no second spelling of a signed report verifies.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from estate.canonical import canonical_json, rfc3339
from estate.errors import InputError
from policies import Finding, summarize

from ..errors import VerificationError
from ..signing import Signer, key_id, verify

SCHEMA = "skydd.report/1"
PUBLIC_KEY_NAME = "report.pub.pem"  # a copy for readers elsewhere; verification never trusts it
_SIGNATURE_KEYS = {"alg", "key_id", "value"}


def build_report(findings: Sequence[Finding], *, at: datetime, inventory: Mapping[str, str],
                 catalog: Mapping[str, str], drift: Mapping[str, Any] | None = None,
                 selection: Mapping[str, Any] | None = None,
                 tampering: Sequence[Mapping[str, str]] = ()) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "id": str(uuid.uuid4()),
        "generated_at": rfc3339(at),
        "inventory": dict(inventory),
        "catalog": dict(catalog),
        "selection": dict(selection or {}),
        "summary": summarize(findings),
        "drift": dict(drift or {"previous": None, "newly_failing": [], "newly_fixed": [],
                                 "transitions": []}),
        "findings": [f.to_dict() for f in findings],
        "tampering": [dict(t) for t in tampering],
    }


def sign_report(report: dict[str, Any], signer: Signer) -> dict[str, Any]:
    body = {k: v for k, v in report.items() if k != "signature"}
    return {**body, "signature": {"alg": "Ed25519", "key_id": signer.key_id,
                                  "value": signer.sign(canonical_json(body))}}


def render_report_file(report: Mapping[str, Any]) -> bytes:
    """The bytes of ``report.json``: the one pretty form a verifier accepts besides canonical."""
    return (json.dumps(report, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


def write_json(report: Mapping[str, Any], out_dir: Path, signer: Signer) -> Path:
    path = out_dir / "report.json"
    path.write_bytes(render_report_file(report))
    (out_dir / PUBLIC_KEY_NAME).write_bytes(signer.public_pem())
    return path


@dataclass(frozen=True)
class VerifiedReport:
    report: dict[str, Any]
    key_id: str  # the id of the trusted key that verified the signature


def read_report_file(path: Path) -> bytes:
    """The bytes of a report file; ``InputError`` (exit 2) when missing, unreadable or empty."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: not a readable report ({err.strerror or err})") from err
    if not data:
        raise InputError(f"{path}: not a readable report (the file is empty)")
    return data


def verify_report(path: Path, trusted: Ed25519PublicKey | Iterable[Ed25519PublicKey]
                  ) -> VerifiedReport:
    """Read ``path`` (``InputError`` when missing, unreadable or empty) and verify it."""
    return verify_report_bytes(read_report_file(path), trusted)


def verify_report_bytes(data: bytes, trusted: Ed25519PublicKey | Iterable[Ed25519PublicKey]
                        ) -> VerifiedReport:
    """Return the report if it is in canonical form and signed by a trusted key; raise
    ``VerificationError`` naming the first problem otherwise."""
    keys = [trusted] if isinstance(trusted, Ed25519PublicKey) else list(trusted)
    if not keys:
        raise VerificationError("no trusted key to verify with")
    report = parse_report(data)
    if report.get("schema") != SCHEMA:
        raise VerificationError(f"not a {SCHEMA} report")
    sig = report.get("signature")
    if (not isinstance(sig, dict) or set(sig) != _SIGNATURE_KEYS or sig["alg"] != "Ed25519"
            or not isinstance(sig["key_id"], str) or not isinstance(sig["value"], str)):
        raise VerificationError("no Ed25519 signature (an object with exactly alg, key_id and value)")
    try:
        forms = (render_report_file(report), canonical_json(report), canonical_json(report) + b"\n")
    except (ValueError, RecursionError) as err:  # lone surrogates, numbers beyond a double
        raise VerificationError(f"not canonical JSON ({type(err).__name__})") from err
    if data not in forms:
        raise VerificationError("not in canonical form (changed or re-formatted after signing; "
                                "Skydd writes sorted keys, two-space indent, UTF-8, one final newline)")
    by_id = {key_id(k): k for k in keys}
    claimed = sig["key_id"]
    if claimed not in by_id:
        raise VerificationError(f"signed by key {_short(repr(claimed))}, which is not trusted "
                                f"(trusted: {', '.join(sorted(by_id))})")
    body = {k: v for k, v in report.items() if k != "signature"}
    verify(by_id[claimed], canonical_json(body), sig["value"])
    return VerifiedReport(report, key_id(by_id[claimed]))


def parse_report(data: bytes) -> dict[str, Any]:
    """Strict JSON: UTF-8 without BOM, an object, no duplicate keys, no NaN/Infinity, no
    trailing data. Raises ``VerificationError``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise VerificationError(f"not UTF-8 (byte {err.start})") from err
    try:
        report = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":
            raise VerificationError(f"trailing data after the report (line {err.lineno}, column "
                                    f"{err.colno})") from err
        raise VerificationError(f"not JSON ({err.msg}, line {err.lineno}, column {err.colno})") from err
    except RecursionError as err:
        raise VerificationError("not a report: nested too deeply") from err
    except ValueError as err:  # duplicate keys, NaN, integers beyond Python's digit limit
        raise VerificationError(str(err)) from err
    if not isinstance(report, dict):
        raise VerificationError(f"not a {SCHEMA} report (not a JSON object)")
    return report


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {_short(repr(k))}: a report has one value per key")
        out[k] = v
    return out


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
