"""Validate an e-ID card certificate and say why it is refused.

``evaluate_card`` returns a verdict with every reason; ``verify_card`` is the raising gate built
on it. Checks: chain (issued and signed by a trusted e-ID CA), validity at ``at``, KeyUsage
``digitalSignature`` (critical), EKU ``clientAuth``, the certificate policy, and revocation
against the issuer's CRL (a CRL that is missing, badly signed or stale refuses the card).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .ca import SITHS_LAB_POLICY_OID

_E = TypeVar("_E", bound=x509.ExtensionType)

REASONS = ("chain", "validity", "key-usage", "eku", "policy", "revocation", "identity")


class CardRefused(Exception):
    """The card certificate is not acceptable; ``reasons`` names each failed check."""

    def __init__(self, reasons: dict[str, str]) -> None:
        self.reasons = reasons
        super().__init__("; ".join(f"{k}: {v}" for k, v in reasons.items()))


@dataclass(frozen=True)
class CardVerdict:
    hsa_id: str | None
    subject: str
    serial: int
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return not self.reasons


def _signed_by(cert: x509.Certificate | x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    algo = cert.signature_hash_algorithm
    if algo is None:  # Ed25519/Ed448 signatures: no e-ID issuer key (EC or RSA) makes them
        return False
    data = cert.tbs_certificate_bytes if isinstance(cert, x509.Certificate) else cert.tbs_certlist_bytes
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, data, ec.ECDSA(algo))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, data, padding.PKCS1v15(), algo)
        else:
            return False
    except (InvalidSignature, TypeError, ValueError):
        return False
    return True


def _ext(cert: x509.Certificate, cls: type[_E]) -> x509.Extension[_E] | None:
    try:
        return cert.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        return None


def evaluate_card(cert: x509.Certificate, trusted: Sequence[x509.Certificate],
                  crls: Sequence[x509.CertificateRevocationList], at: datetime, *,
                  policies: Sequence[str] = (SITHS_LAB_POLICY_OID,)) -> CardVerdict:
    """Every reason the card would be refused at ``at`` (empty when it is acceptable)."""
    reasons: dict[str, str] = {}
    issuer = next((ca for ca in trusted if ca.subject == cert.issuer and _signed_by(cert, ca)), None)
    if issuer is None:
        reasons["chain"] = f"issuer {cert.issuer.rfc4514_string()!r} is not a trusted e-ID CA"
    if not (cert.not_valid_before_utc <= at <= cert.not_valid_after_utc):
        reasons["validity"] = (f"valid {cert.not_valid_before_utc:%Y-%m-%d} to "
                               f"{cert.not_valid_after_utc:%Y-%m-%d}, not at {at:%Y-%m-%d %H:%M}Z")
    ku = _ext(cert, x509.KeyUsage)
    if ku is None or not ku.value.digital_signature:
        reasons["key-usage"] = "KeyUsage lacks digitalSignature"
    elif not ku.critical:
        reasons["key-usage"] = "KeyUsage is not marked critical"
    eku = _ext(cert, x509.ExtendedKeyUsage)
    if eku is None or ExtendedKeyUsageOID.CLIENT_AUTH not in eku.value:
        reasons["eku"] = "ExtendedKeyUsage lacks clientAuth"
    cp = _ext(cert, x509.CertificatePolicies)
    have = {p.policy_identifier.dotted_string for p in cp.value} if cp else set()
    if not have & set(policies):
        reasons["policy"] = f"no accepted certificate policy (has {sorted(have) or 'none'})"
    if issuer is not None:
        crl = next((c for c in crls if c.issuer == issuer.subject), None)
        if crl is None:
            reasons["revocation"] = "no CRL from the issuer: revocation cannot be checked"
        elif not _signed_by(crl, issuer):
            reasons["revocation"] = "the issuer's CRL has a bad signature"
        elif crl.next_update_utc is None or crl.next_update_utc < at:
            reasons["revocation"] = "the issuer's CRL is stale (past its next update)"
        else:
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is not None and entry.revocation_date_utc <= at:
                reasons["revocation"] = f"revoked on {entry.revocation_date_utc:%Y-%m-%d %H:%M}Z"
    serials = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    hsa_id = str(serials[0].value) if serials else None
    if hsa_id is None:
        reasons["identity"] = "no HSA-id in the subject serialNumber"
    return CardVerdict(hsa_id, cert.subject.rfc4514_string(), cert.serial_number, reasons)


def verify_card(cert: x509.Certificate, trusted: Sequence[x509.Certificate],
                crls: Sequence[x509.CertificateRevocationList], at: datetime, *,
                policies: Sequence[str] = (SITHS_LAB_POLICY_OID,)) -> str:
    """The card's HSA-id; raises ``CardRefused`` naming every failed check."""
    verdict = evaluate_card(cert, trusted, crls, at, policies=policies)
    if not verdict.accepted:
        raise CardRefused(verdict.reasons)
    assert verdict.hsa_id is not None
    return verdict.hsa_id
