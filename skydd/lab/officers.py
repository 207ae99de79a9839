"""Lab officers' keys: an Ed25519 key pair per officer of the inventory's roster, under
``$SKYDD_HOME/lab/officers/`` (``<id>.pem`` private, 0600; ``<id>.pub.pem`` public, the file the
roster's ``public_key`` names). Made once and kept, so waivers signed before a restart still verify;
``down`` removes them with the rest of the lab.

In the lab one person holds every officer's key; in an estate each officer keeps their own
private key, and only the public halves sit beside the inventory (docs/adr/0011-four-eyes.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from estate import files

from .errors import LabError
from .service import LabService, Progress


def officer_key_paths(home: Path, officer_id: str) -> tuple[Path, Path]:
    """(private, public) key files of a lab officer."""
    d = home / "lab" / "officers"
    return d / f"{officer_id}.pem", d / f"{officer_id}.pub.pem"


def ensure_officer_key(home: Path, officer_id: str) -> bool:
    """Make the officer's key pair unless it exists; True when it was made."""
    private, public = officer_key_paths(home, officer_id)
    if private.exists() and public.exists():
        return False
    private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    files.replace(private, pem, 0o600)
    files.replace(public, pub, 0o644)
    return True


class Service(LabService):
    name = "officers"

    def up(self, progress: Progress) -> None:
        inv = self._inventory()
        for o in inv.officers:
            _, public = officer_key_paths(self.home, o.id)
            if Path(o.public_key) != public:
                raise LabError(f"officer {o.id}: the lab inventory must name {public} as public_key "
                               f"(it names {o.public_key})")
            made = ensure_officer_key(self.home, o.id)
            progress(f"{o.id} ({o.name}): {'new key' if made else 'key kept'} in {public.parent}")

    def down(self, progress: Progress) -> None:
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def status(self) -> dict[str, Any]:
        ids = sorted(p.name.removesuffix(".pub.pem") for p in self.state_dir.glob("*.pub.pem"))
        return {"state": "up" if ids else "down", "endpoint": str(self.state_dir), "officers": ids}
