"""The lab PKI under ``$SKYDD_HOME/lab/pki``: a TLS CA and server certificate, the e-ID CA with
its CRL, a foreign CA, and issued card certificates.

As found (unhardened) the key files are world-readable: control ``d.key-files-private`` catches
that and the ``key_store`` role fixes it. Files are written whole (temporary file, then rename).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

from .ca import CardAuthority, CardIdentity, pem_of

AS_FOUND_MODE = 0o644  # deliberately too open: the lab starts unhardened


def _write(path: Path, data: bytes, mode: int = AS_FOUND_MODE) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    tmp.replace(path)


@dataclass(frozen=True)
class CardFiles:
    cert: Path
    key: Path
    serial: int


class LabPki:
    """The lab's certificates; ``ensure`` makes what is missing and keeps what exists."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cards = root / "cards"

    # paths other parts of the lab rely on
    @property
    def ca_pem(self) -> Path:
        return self.root / "ca.pem"

    @property
    def server_pem(self) -> Path:
        return self.root / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def eid_ca_pem(self) -> Path:
        return self.root / "eid-ca.pem"

    @property
    def crl_pem(self) -> Path:
        return self.root / "crl.pem"

    @property
    def foreign_ca_pem(self) -> Path:
        return self.root / "foreign-ca.pem"

    def ensure(self, at: datetime) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.cards.mkdir(exist_ok=True)
        tls = self._authority("ca", "Skydd lab TLS CA", at)
        if not self.server_pem.exists() or not self.server_key.exists():
            cert, key = tls.issue_server(["localhost", "127.0.0.1"], at)
            _write(self.server_key, pem_of(key))
            _write(self.server_pem, pem_of(cert))
        self._authority("eid-ca", "Skydd lab e-ID CA (SITHS-like)", at)
        self._authority("foreign-ca", "Foreign card CA", at)
        if not self.crl_pem.exists():
            self.publish_crl(at)

    def _authority(self, stem: str, name: str, at: datetime) -> CardAuthority:
        cert, key = self.root / f"{stem}.pem", self.root / f"{stem}.key"
        if cert.exists() and key.exists():
            ca = CardAuthority.load(cert.read_bytes(), key.read_bytes())
        else:
            ca = CardAuthority.create(name, at)
            _write(key, pem_of(ca.key))
            _write(cert, pem_of(ca.cert))
        if stem == "eid-ca":
            for serial, when in self._revoked().items():
                ca.revoke(serial, when)
        return ca

    def _revoked(self) -> dict[int, datetime]:
        path = self.root / "eid-revoked.json"
        if not path.exists():
            return {}
        return {int(k): datetime.fromisoformat(v) for k, v in json.loads(path.read_text()).items()}

    def eid_ca(self, at: datetime) -> CardAuthority:
        return self._authority("eid-ca", "Skydd lab e-ID CA (SITHS-like)", at)

    def card(self, name: str) -> CardFiles | None:
        cert, key = self.cards / f"{name}.pem", self.cards / f"{name}.key"
        if not cert.exists() or not key.exists():
            return None
        return CardFiles(cert, key, x509.load_pem_x509_certificate(cert.read_bytes()).serial_number)

    def issue_card(self, name: str, who: CardIdentity, at: datetime, *, foreign: bool = False) -> CardFiles:
        """Issue (once) the card ``name``; ``foreign`` issues it from the foreign CA."""
        existing = self.card(name)
        if existing is not None:
            return existing
        ca = self._authority("foreign-ca" if foreign else "eid-ca",
                             "Foreign card CA" if foreign else "Skydd lab e-ID CA (SITHS-like)", at)
        cert, key = ca.issue_card(who, at)
        _write(self.cards / f"{name}.key", pem_of(key))
        _write(self.cards / f"{name}.pem", pem_of(cert))
        return CardFiles(self.cards / f"{name}.pem", self.cards / f"{name}.key", cert.serial_number)

    def revoke(self, name: str, at: datetime) -> None:
        """Revoke a card of the e-ID CA and publish a new CRL."""
        card = self.card(name)
        if card is None:
            raise FileNotFoundError(f"no card {name!r} in {self.cards}")
        revoked = {str(k): v.isoformat() for k, v in self._revoked().items()}
        revoked.setdefault(str(card.serial), at.isoformat())
        _write(self.root / "eid-revoked.json", json.dumps(revoked, indent=2).encode())
        self.publish_crl(at)

    def publish_crl(self, at: datetime, *, valid_for: timedelta = timedelta(days=30)) -> Path:
        _write(self.crl_pem, pem_of(self.eid_ca(at).crl(at, next_update=valid_for)))
        return self.crl_pem
