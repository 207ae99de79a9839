"""Fuzz the LMS import: any CSV or JSON text is imported or rejected as a whole
(``ImportRejected``, exit 1, each problem one line); never another exception. Bound: 300
examples, 2 s each, 60 s per test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from identity.training_import import ImportRejected, import_text
from identity.training_store import TrainingStore

from .runner import JSON_ALPHABET, fuzz_settings, mutations

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CSV = ("username,hsa_id,course,completed_at,score\n"
       "anna.torsby,SE2321000016-T001,sec-basic,2026-03-01,92\n"
       "anna.torsby,,patient-data,2025-05-02T09:30:00+02:00,88\n")
JSON = json.dumps({"courses": [{"code": "sec-basic", "title": "Basics", "validity_days": 365}],
                   "requirements": [{"role": "socialcare-user", "course": "sec-basic"}],
                   "completions": [{"username": "anna.torsby", "course": "sec-basic",
                                    "completed_at": "2026-03-01"}]}, indent=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainingStore]:
    s = TrainingStore(f"sqlite:///{tmp_path_factory.mktemp('lms-fuzz') / 'training.db'}")
    import_text(s, json.dumps({"courses": [{"code": "sec-basic", "title": "B", "validity_days": 365},
                                           {"code": "patient-data", "title": "P", "validity_days": 730}]}),
                "json", "seed.json", AT)
    with s.transaction() as tx:
        s.register_user(tx, "anna.torsby", AT, hsa_id="SE2321000016-T001", roles=["socialcare-user"])
    yield s
    s.close()


def _import(store: TrainingStore, text: str, fmt: str) -> None:
    try:
        import_text(store, text, fmt, f"fuzz.{fmt}", AT)
    except ImportRejected as err:
        assert err.errors
        for problem in err.errors:
            line = str(problem)
            assert "\n" not in line.strip()
            line.encode("utf-8")  # printable on any UTF-8 terminal (no lone surrogates)


@st.composite
def csv_texts(draw) -> str:
    return mutations(draw, CSV, [*list(',"\n\r ;\t\x00'), "anna.torsby", "sec-basic", "2026-02-30", "Z"], steps=6)


@st.composite
def json_texts(draw) -> str:
    return mutations(draw, JSON, [*JSON_ALPHABET, "1e999", "-0", "99999999999999999999", "null"], steps=6)


@pytest.mark.timeout(60)
@fuzz_settings(150)
@given(text=st.one_of(csv_texts(), st.text(max_size=200)))
def test_csv(store: TrainingStore, text: str) -> None:
    _import(store, text, "csv")


@pytest.mark.timeout(60)
@fuzz_settings(150)
@given(text=st.one_of(json_texts(), st.lists(st.sampled_from(JSON_ALPHABET), max_size=120).map("".join)))
def test_json(store: TrainingStore, text: str) -> None:
    _import(store, text, "json")
