"""Fuzz ``skydd report verify`` through the real CLI entry: a signed report mutated anywhere, and
arbitrary bytes, give exit 0 (valid), 1 (invalid) or 2 (bad input) with no traceback. Bound: 200
examples, 2 s each, 60 s per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.reports.json_report import PUBLIC_KEY_NAME, render_report_file, sign_report
from audit.signing import load_signer

from .runner import JSON_ALPHABET, assert_documented, fuzz_settings, mutations, run_cli


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("report-fuzz")


def _signed(folder: Path) -> str:
    signer = load_signer(folder / "home")
    report = sign_report({"schema": "skydd.report/1", "id": "r1", "findings": [{"control": "d.x"}]}, signer)
    (folder / PUBLIC_KEY_NAME).write_bytes(signer.public_pem())
    return render_report_file(report).decode("utf-8")  # the form verify accepts (canonical)


@pytest.fixture(scope="module")
def signed(folder: Path) -> str:
    return _signed(folder)


@st.composite
def mutated(draw, text: str) -> str:
    return mutations(draw, text, JSON_ALPHABET, steps=4)


def test_the_unmutated_report_is_valid(folder: Path, signed: str) -> None:
    (folder / "report.json").write_text(signed)
    r = run_cli(folder / "home", "report", "verify", str(folder / "report.json"))
    assert r.code == 0 and "valid: report r1" in r.out


@pytest.mark.timeout(60)
@fuzz_settings(100)
@given(data=st.data())
def test_mutated_reports(folder: Path, signed: str, data: st.DataObject) -> None:
    text = data.draw(mutated(signed))
    (folder / "report.json").write_bytes(text.encode("utf-8", "surrogatepass"))
    assert_documented(run_cli(folder / "home", "report", "verify", str(folder / "report.json")))


@pytest.mark.timeout(60)
@fuzz_settings(100)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes(folder: Path, data: bytes) -> None:
    (folder / "report.json").write_bytes(data)
    assert_documented(run_cli(folder / "home", "report", "verify", str(folder / "report.json")))


def test_a_valid_signature_without_key_id_is_not_an_internal_error(folder: Path, signed: str) -> None:
    (folder / "report.json").write_text(signed.replace('"key_id"', '"other"'))
    assert_documented(run_cli(folder / "home", "report", "verify", str(folder / "report.json")))
