"""Fuzz ``skydd log verify`` through the real CLI entry: an intact, signed audit log mutated
anywhere, and arbitrary bytes, give exit 0 (intact), 1 (broken) or 2 (bad input) with no
traceback. Bound: 200 examples, 2 s each, 60 s per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit import log
from audit.signing import load_signer

from .runner import JSON_ALPHABET, assert_documented, fuzz_settings, mutations, run_cli


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("log-fuzz") / "home"
    signer = load_signer(home)
    for i in range(3):
        log.append(home / "intact.log", signer, "waiver.request", "alice", {"i": i})
    return home


@st.composite
def mutated(draw, text: str) -> str:
    return mutations(draw, text, [*JSON_ALPHABET, '"seq":', '"prev":', "\n"], steps=4)


def test_the_unmutated_log_is_intact(home: Path) -> None:
    r = run_cli(home, "log", "verify", "--log", str(home / "intact.log"))
    assert r.code == 0, r.err


@pytest.mark.timeout(60)
@fuzz_settings(100)
@given(data=st.data())
def test_mutated_logs(home: Path, data: st.DataObject) -> None:
    text = data.draw(mutated((home / "intact.log").read_text()))
    (home / "fuzz.log").write_bytes(text.encode("utf-8", "surrogatepass"))
    assert_documented(run_cli(home, "log", "verify", "--log", str(home / "fuzz.log")))


@pytest.mark.timeout(60)
@fuzz_settings(100)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes(home: Path, data: bytes) -> None:
    (home / "fuzz.log").write_bytes(data)
    assert_documented(run_cli(home, "log", "verify", "--log", str(home / "fuzz.log")))
