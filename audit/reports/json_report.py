"""``report.json`` (schema ``skydd.report/1``): built from findings, signed with Ed25519 over the
canonical JSON of everything but ``signature``, verified byte for byte."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

from estate.canonical import canonical_json, rfc3339
from policies import Finding, summarize

from ..errors import VerificationError
from ..signing import Signer, load_public_key, verify

SCHEMA = "skydd.report/1"
PUBLIC_KEY_NAME = "report.pub.pem"


def build_report(findings: Sequence[Finding], *, at: datetime, inventory: Mapping[str, str],
                 catalog: Mapping[str, str], drift: Mapping[str, Any] | None = None,
                 selection: Mapping[str, Any] | None = None) -> dict[str, Any]:
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
    }


def sign_report(report: dict[str, Any], signer: Signer) -> dict[str, Any]:
    body = {k: v for k, v in report.items() if k != "signature"}
    return {**body, "signature": {"alg": "Ed25519", "key_id": signer.key_id,
                                  "value": signer.sign(canonical_json(body))}}


def write_json(report: Mapping[str, Any], out_dir: Path, signer: Signer) -> Path:
    path = out_dir / "report.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False, sort_keys=True) + "\n",
                    encoding="utf-8")
    (out_dir / PUBLIC_KEY_NAME).write_bytes(signer.public_pem())
    return path


def verify_report(path: Path, public_key_pem: bytes | None = None) -> dict[str, Any]:
    """Return the report if its signature holds; raise ``VerificationError`` otherwise.

    Without an explicit key, the public key written beside the report is used; pass the key
    you trust to detect a report re-signed with another key.
    """
    try:
        report = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as err:
        raise VerificationError(f"{path}: not a readable JSON report ({err})") from err
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise VerificationError(f"{path}: not a {SCHEMA} report")
    sig = report.get("signature")
    if not isinstance(sig, dict) or sig.get("alg") != "Ed25519" or not isinstance(sig.get("value"), str):
        raise VerificationError(f"{path}: no Ed25519 signature")
    if public_key_pem is None:
        try:
            public_key_pem = (path.parent / PUBLIC_KEY_NAME).read_bytes()
        except OSError as err:
            raise VerificationError(f"{path}: no public key given and none beside the report") from err
    body = {k: v for k, v in report.items() if k != "signature"}
    verify(load_public_key(public_key_pem), canonical_json(body), sig["value"])
    return report
