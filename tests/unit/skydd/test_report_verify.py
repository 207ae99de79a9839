"""``skydd report verify`` says the truth (issue 12, item 3): it trusts only a pinned key, names
the key that verified, reads the file strictly, and tells unreadable input (exit 2) from an
invalid report (exit 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit.reports.json_report import PUBLIC_KEY_NAME, render_report_file, sign_report
from audit.signing import Signer, load_signer

from .test_signed_records import skydd

BODY = {"schema": "skydd.report/1", "id": "r-1", "summary": {"status": "noncompliant"},
        "findings": [{"control": "d.x", "status": "fail", "message": "åtgärda"}]}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def signer(home: Path) -> Signer:
    return load_signer(home)  # the home's own key: trusted by default


def write(folder: Path, report: dict, signer: Signer) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_bytes(render_report_file(report))
    (folder / PUBLIC_KEY_NAME).write_bytes(signer.public_pem())
    return folder / "report.json"


def test_a_report_signed_by_the_home_key_is_valid_and_says_how(tmp_path: Path, home: Path,
                                                               signer: Signer) -> None:
    path = write(tmp_path / "r", sign_report(BODY, signer), signer)
    r = skydd(home, "report", "verify", str(path))
    assert r.code == 0, r.err
    key = home / "keys" / "signing-ed25519.pem"
    assert r.out.strip() == f"valid: report r-1 signed by {signer.key_id} (trusted via the home key {key})"
    # The compact canonical form is the other accepted spelling.
    path.write_bytes(json.dumps(sign_report(BODY, signer), sort_keys=True, separators=(",", ":"),
                                ensure_ascii=False).encode())
    assert skydd(home, "report", "verify", str(path)).code == 0


def test_a_report_re_signed_by_an_attacker_is_invalid_without_public_key(
        tmp_path: Path, home: Path, signer: Signer) -> None:
    attacker = load_signer(tmp_path / "attacker")
    forged = sign_report({**BODY, "summary": {"status": "compliant"}}, attacker)
    path = write(tmp_path / "r", forged, attacker)  # with the attacker's report.pub.pem beside it

    r = skydd(home, "report", "verify", str(path))
    assert r.code == 1 and f"signed by key '{attacker.key_id}', which is not trusted" in r.err

    # Keeping the original key id in the signature does not help.
    forged["signature"]["key_id"] = signer.key_id
    path.write_bytes(render_report_file(forged))
    r = skydd(home, "report", "verify", str(path))
    assert r.code == 1 and "signature does not match" in r.err

    # Trusting the attacker's key explicitly verifies, and names that key, not the home's.
    forged["signature"]["key_id"] = attacker.key_id
    path.write_bytes(render_report_file(forged))
    r = skydd(home, "report", "verify", str(path), "--public-key", str(path.parent / PUBLIC_KEY_NAME))
    assert r.code == 0, r.err
    assert f"signed by {attacker.key_id} (trusted via --public-key" in r.out
    assert signer.key_id not in r.out


def test_a_trust_file_pins_several_keys(tmp_path: Path, home: Path, signer: Signer) -> None:
    other = load_signer(tmp_path / "other")
    trust = tmp_path / "trusted.pem"
    trust.write_bytes(b"# Torsby\n" + other.public_pem() + b"# Sunne\n" + signer.public_pem())
    path = write(tmp_path / "r", sign_report(BODY, other), other)
    r = skydd(tmp_path / "fresh-home", "report", "verify", str(path), "--trust", str(trust))
    assert r.code == 0 and f"signed by {other.key_id} (trusted via --trust {trust})" in r.out
    bad = tmp_path / "bad.pem"
    bad.write_text("no keys here\n")
    assert skydd(home, "report", "verify", str(path), "--trust", str(bad)).code == 2
    both = skydd(home, "report", "verify", str(path), "--trust", str(trust), "--public-key", str(trust))
    assert both.code == 2 and "not both" in both.err


def test_without_a_home_key_nothing_is_trusted(tmp_path: Path) -> None:
    signer = load_signer(tmp_path / "elsewhere")
    path = write(tmp_path / "r", sign_report(BODY, signer), signer)
    r = skydd(tmp_path / "fresh-home", "report", "verify", str(path))
    assert r.code == 2 and "report.pub.pem beside a report is not trusted" in r.err


def _duplicate_status(signer: Signer) -> bytes:
    """The signed compliant report with a noncompliant status first: many parsers keep the first."""
    text = render_report_file(sign_report({**BODY, "summary": {"status": "compliant"}}, signer)).decode()
    return text.replace('"status": "compliant"', '"status": "noncompliant",\n    "status": "compliant"',
                        1).encode()


@pytest.mark.parametrize(("mutate", "reason"), [
    (_duplicate_status, "duplicate key 'status'"),
    (lambda s: render_report_file(sign_report(BODY, s)) + b'{"extra": 1}\n', "trailing data"),
    (lambda s: render_report_file(sign_report(BODY, s)) + b"\n\n", "not in canonical form"),
    (lambda s: json.dumps(sign_report(BODY, s), indent=1).encode(), "not in canonical form"),
    (lambda s: render_report_file(sign_report(BODY, s)).replace(b'"d.x"', b'"d\\u002ex"'),
     "not in canonical form"),
    (lambda s: b"\xef\xbb\xbf" + render_report_file(sign_report(BODY, s)), "not JSON"),
    (lambda s: render_report_file(sign_report(BODY, s)).replace("å".encode(), b"\xe5"), "not UTF-8"),
    (lambda s: render_report_file(sign_report({**BODY, "n": 1}, s)).replace(b'"n": 1', b'"n": NaN'),
     "NaN is not a JSON number"),
    (lambda s: render_report_file({**sign_report(BODY, s), "signature": {
        **sign_report(BODY, s)["signature"], "note": "x"}}), "exactly alg, key_id and value"),
])
def test_strict_parsing_refuses_other_spellings_even_with_the_key(
        tmp_path: Path, home: Path, signer: Signer, mutate, reason: str) -> None:
    path = tmp_path / "report.json"
    path.write_bytes(mutate(signer))
    pem = tmp_path / "key.pem"
    pem.write_bytes(signer.public_pem())
    r = skydd(home, "report", "verify", str(path), "--public-key", str(pem))
    assert r.code == 1, (r.out, r.err)
    assert reason in r.err and len(r.err.strip().splitlines()) == 1


@pytest.mark.parametrize("make", [
    lambda p: None,  # missing
    lambda p: p.write_bytes(b""),  # empty
    lambda p: p.mkdir(),  # a folder: unreadable as a file
])
def test_missing_empty_or_unreadable_file_is_exit_2(tmp_path: Path, home: Path, signer: Signer,
                                                   make) -> None:
    path = tmp_path / "report.json"
    make(path)
    r = skydd(home, "report", "verify", str(path))
    assert r.code == 2 and "not a readable report" in r.err, r.err
