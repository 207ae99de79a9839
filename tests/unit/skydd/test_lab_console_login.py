"""``skydd lab otp`` and ``skydd lab card``: what a person needs to sign in to the console as a lab
officer (a code from the lab's TOTP secret, never the same twice; the card as PKCS#12 for a
browser), and one line with exit 2 for a user the lab does not have."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pyotp
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from identity.eid.ca import CardIdentity
from identity.eid.lab import LabPki
from identity.totp import OtpStore

BIN = Path(sys.executable).parent
SECRET = pyotp.random_base32()


def skydd(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "skydd"), "lab", *args], capture_output=True, text=True,
                          env={**os.environ, "SKYDD_HOME": str(home)}, timeout=60, check=False)


def test_otp_gives_the_current_code_once_then_the_next(tmp_path: Path) -> None:
    OtpStore(tmp_path / "lab" / "keycloak" / "console-otp").save("greta.officer", SECRET)
    totp = pyotp.TOTP(SECRET)
    before = time.time()
    first = skydd("otp", "greta.officer", home=tmp_path)
    assert first.returncode == 0, first.stderr
    code = first.stdout.strip()
    assert code in {totp.at(before), totp.at(before + 30)}
    second = skydd("otp", "greta.officer", home=tmp_path)
    assert second.returncode == 0 and second.stdout.strip() != code  # a used step is never given again


def test_otp_and_card_refuse_what_the_lab_does_not_have(tmp_path: Path) -> None:
    unknown = skydd("otp", "mallory", home=tmp_path)
    assert unknown.returncode == 2 and "not a lab console user" in unknown.stderr
    assert unknown.stderr.count("\n") == 1
    not_up = skydd("otp", "olof.officer", home=tmp_path)
    assert not_up.returncode == 1 and "skydd lab up" in not_up.stderr
    no_card = skydd("card", "olof.officer", "--out", str(tmp_path / "o.p12"), home=tmp_path)
    assert no_card.returncode == 1 and "skydd lab up" in no_card.stderr
    assert not (tmp_path / "o.p12").exists()


def test_card_writes_the_officers_certificate_and_key_as_private_pkcs12(tmp_path: Path) -> None:
    (tmp_path / "lab" / "pki" / "cards").mkdir(parents=True)
    files = LabPki(tmp_path / "lab" / "pki").issue_card(
        "greta.officer", CardIdentity("SE2321000016-G001", "Greta", "Officer"), datetime.now(UTC))
    out = tmp_path / "greta.p12"
    proc = skydd("card", "greta.officer", "--out", str(out), home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key, cert, _ = pkcs12.load_key_and_certificates(out.read_bytes(), None)
    assert cert is not None and key is not None
    assert cert == x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert key.public_key() == cert.public_key()
