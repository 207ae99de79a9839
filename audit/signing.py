"""Ed25519 signing keys under ``$SKYDD_HOME/keys``: made on first use (0600), never overwritten."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from estate import files

from .errors import VerificationError

KEY_NAME = "signing-ed25519.pem"


class Signer:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = key.public_key()
        self.key_id = key_id(self.public_key)

    def sign(self, payload: bytes) -> str:
        return base64.b64encode(self._key.sign(payload)).decode("ascii")

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def load_signer(home: Path) -> Signer:
    """The signing key of this Skydd home, made on first use with mode 0600."""
    keys = home / "keys"
    keys.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = keys / KEY_NAME
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        tmp = keys / f".{KEY_NAME}.{os.getpid()}"
        files.write_new(tmp, pem)
        try:
            os.link(tmp, path)  # atomic and never replaces a key another process made first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        files.fsync_dir(keys)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise VerificationError(f"{path} is not an Ed25519 private key")
    return Signer(key)


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as err:
        raise VerificationError("not a PEM public key") from err
    if not isinstance(key, Ed25519PublicKey):
        raise VerificationError("not an Ed25519 public key")
    return key


def verify(public_key: Ed25519PublicKey, payload: bytes, signature_b64: str) -> None:
    """Raise ``VerificationError`` unless ``signature_b64`` signs ``payload``."""
    try:
        raw = base64.b64decode(signature_b64, validate=True)
        if base64.b64encode(raw).decode("ascii") != signature_b64:
            raise ValueError("not canonical base64")  # no second spelling of one signature
        public_key.verify(raw, payload)
    except (InvalidSignature, ValueError) as err:
        raise VerificationError("signature does not match the signed content") from err


# -- audit log checkpoints ---------------------------------------------------------------------

CHECKPOINT_SCHEMA = "skydd.audit-log.checkpoint/1"


def checkpoint_payload(head_seq: int, head_hash: str, at: str, key_id: str) -> bytes:
    """The bytes a log checkpoint signs: the chain head (seq and hash), when, and by which key.

    Kept independent of the entry's JSON form so a verifier rebuilds it from parsed values.
    """
    return (f"{CHECKPOINT_SCHEMA}\nseq {head_seq}\nhash {head_hash}\nat {at}\nkey {key_id}\n"
            ).encode()


def sign_checkpoint(signer: Signer, head_seq: int, head_hash: str, at: str) -> dict[str, object]:
    """The ``data`` of a checkpoint entry over the head ``(head_seq, head_hash)``."""
    return {"head": {"seq": head_seq, "hash": head_hash}, "key_id": signer.key_id,
            "signature": signer.sign(checkpoint_payload(head_seq, head_hash, at, signer.key_id))}



def load_home_public_key(home: Path) -> Ed25519PublicKey:
    """The public half of this Skydd home's signing key; never makes a key.

    Raises ``FileNotFoundError`` when the home has no signing key yet.
    """
    path = home_key_path(home)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise VerificationError(f"{path} is not an Ed25519 private key")
    return key.public_key()


def home_key_path(home: Path) -> Path:
    """Where this Skydd home keeps its signing key (the key ``report verify`` trusts by default)."""
    return home / "keys" / KEY_NAME


_PEM_BLOCK = re.compile(rb"-----BEGIN PUBLIC KEY-----\r?\n.*?-----END PUBLIC KEY-----", re.DOTALL)


def load_trusted_keys(pem: bytes) -> list[Ed25519PublicKey]:
    """Every public key of a trust file: PEM ``PUBLIC KEY`` blocks, one after another (other
    text between them is ignored). Raises ``VerificationError`` when there is none or one is
    not an Ed25519 public key."""
    blocks = _PEM_BLOCK.findall(pem)
    if not blocks:
        raise VerificationError("no PEM public key (-----BEGIN PUBLIC KEY-----) in it")
    keys = []
    for n, block in enumerate(blocks, 1):
        try:
            keys.append(load_public_key(block))
        except VerificationError as err:
            raise VerificationError(f"key {n}: {err}") from err
    return keys
