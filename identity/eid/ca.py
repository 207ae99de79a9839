"""A certificate authority for e-ID cards, built with ``cryptography``.

Card certificates follow the shape of SITHS e-id authentication certificates: the HSA-id in the
subject ``serialNumber`` (2.5.4.5), KeyUsage ``digitalSignature`` marked critical, EKU
``clientAuth`` and a certificate-policy OID. Time is always a parameter (``at``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# A private-arc OID for the lab's card policy; real SITHS policies are Inera's, never claimed here.
SITHS_LAB_POLICY_OID = "1.3.6.1.4.1.55555.1.1.1"

PrivateKey = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class CardIdentity:
    """Who a card belongs to."""

    hsa_id: str
    given_name: str
    surname: str
    organization: str = "Lab kommun"

    @property
    def common_name(self) -> str:
        return f"{self.given_name} {self.surname}"


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem_of(obj: x509.Certificate | x509.CertificateRevocationList | PrivateKey) -> bytes:
    if isinstance(obj, (x509.Certificate, x509.CertificateRevocationList)):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CardAuthority:
    """An issuing CA: its key and self-signed certificate, and the serials it has revoked."""

    def __init__(self, key: PrivateKey, cert: x509.Certificate,
                 revoked: dict[int, datetime] | None = None) -> None:
        self.key = key
        self.cert = cert
        self.revoked: dict[int, datetime] = dict(revoked or {})

    @staticmethod
    def create(name: str, at: datetime, *, days: int = 3650) -> CardAuthority:
        key = new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Skydd lab"),
                             x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(at - timedelta(minutes=5)).not_valid_after(at + timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=True, crl_sign=True,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(ski, critical=False)
                .sign(key, hashes.SHA256()))
        return CardAuthority(key, cert)

    @staticmethod
    def load(cert_pem: bytes, key_pem: bytes) -> CardAuthority:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA key is not an EC key")
        return CardAuthority(key, x509.load_pem_x509_certificate(cert_pem))

    def _leaf(self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey, at: datetime,
              days: int) -> x509.CertificateBuilder:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(at - timedelta(minutes=5)).not_valid_after(at + timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(aki, critical=False))

    def issue_card(self, who: CardIdentity, at: datetime, *, days: int = 730,
                   policy_oid: str = SITHS_LAB_POLICY_OID, key_usage_critical: bool = True,
                   client_auth: bool = True) -> tuple[x509.Certificate, PrivateKey]:
        """A card authentication certificate and its key (the key stands in for the card chip)."""
        key = new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, who.organization),
                             x509.NameAttribute(NameOID.GIVEN_NAME, who.given_name),
                             x509.NameAttribute(NameOID.SURNAME, who.surname),
                             x509.NameAttribute(NameOID.SERIAL_NUMBER, who.hsa_id),
                             x509.NameAttribute(NameOID.COMMON_NAME, who.common_name)])
        ekus = [ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [ExtendedKeyUsageOID.EMAIL_PROTECTION]
        cert = (self._leaf(subject, key.public_key(), at, days)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=False, crl_sign=False,
                                             encipher_only=False, decipher_only=False),
                               critical=key_usage_critical)
                .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
                .add_extension(x509.CertificatePolicies([x509.PolicyInformation(
                    x509.ObjectIdentifier(policy_oid), None)]), critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert, key

    def issue_server(self, hostnames: list[str], at: datetime, *,
                     days: int = 825) -> tuple[x509.Certificate, PrivateKey]:
        """A TLS server certificate (for the lab's HTTPS endpoints)."""
        import ipaddress

        key = new_key()
        names: list[x509.GeneralName] = []
        for h in hostnames:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                names.append(x509.DNSName(h))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
        cert = (self._leaf(subject, key.public_key(), at, days)
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=False, crl_sign=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert, key

    def revoke(self, serial: int, at: datetime) -> None:
        self.revoked.setdefault(serial, at)

    def crl(self, at: datetime, *, next_update: timedelta = timedelta(days=7)) -> x509.CertificateRevocationList:
        """The signed CRL of every revoked serial, valid from ``at`` until ``at + next_update``."""
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(at - timedelta(minutes=5)).next_update(at + next_update)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       self.key.public_key()), critical=False)
                   .add_extension(x509.CRLNumber(int(at.timestamp())), critical=False))
        for serial, when in sorted(self.revoked.items()):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
        return builder.sign(self.key, hashes.SHA256())
