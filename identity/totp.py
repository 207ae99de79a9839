"""TOTP codes for the login probe, never reusing a time step.

Keycloak refuses a code it has seen (``otpPolicyCodeReusable=false``) and accepts one step ahead
(look-ahead window 1), so each user's last used step is kept beside its secret; a second login
in the same 30-second window takes the next step. Secrets live in the lab state, 0600.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyotp


@dataclass(frozen=True)
class OtpPolicy:
    digits: int = 6
    period: int = 30
    algorithm: str = "HmacSHA1"

    @property
    def digest(self) -> Callable[..., hashlib._Hash]:
        return {"HmacSHA1": hashlib.sha1, "HmacSHA256": hashlib.sha256,
                "HmacSHA512": hashlib.sha512}[self.algorithm]


def b32_of_raw(raw_secret: str) -> str:
    """Keycloak's hidden ``totpSecret`` is the raw secret; authenticators use its base32."""
    return base64.b32encode(raw_secret.encode()).decode().rstrip("=")


class OtpStore:
    """Per-user OTP secrets and the last time step used, in ``root/<user>.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, username: str) -> Path:
        return self.root / f"{username}.json"

    def secret(self, username: str) -> str | None:
        p = self._path(username)
        return json.loads(p.read_text())["secret"] if p.exists() else None

    def save(self, username: str, b32_secret: str, last_step: int = -1) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        p = self._path(username)
        tmp = p.with_name(f".{p.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"secret": b32_secret, "last_step": last_step}, f)
        tmp.replace(p)

    def forget(self, username: str) -> None:
        self._path(username).unlink(missing_ok=True)

    def next_code(self, username: str, now: float, policy: OtpPolicy = OtpPolicy(), *,
                  consume: bool = True) -> tuple[str, float]:
        """A fresh code and the time to wait before it is valid (0 when it is valid now);
        ``consume=False`` peeks without marking the step used."""
        data = json.loads(self._path(username).read_text())
        step = int(now // policy.period)
        if step <= data["last_step"]:
            step = data["last_step"] + 1
        wait = max(0.0, (step - 1) * policy.period - now)  # the server accepts one step ahead
        totp = pyotp.TOTP(data["secret"], digits=policy.digits, interval=policy.period,
                          digest=policy.digest)
        code = totp.at(step * policy.period)
        if consume:
            self.save(username, data["secret"], step)
        return code, wait

    @staticmethod
    def wrong_code(right: str) -> str:
        """A code that is certainly not ``right``."""
        return "".join(str((int(c) + 5) % 10) for c in right)
