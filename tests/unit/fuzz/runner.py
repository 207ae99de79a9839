"""Run the real CLI entry (``skydd.cli.main``) in this process, so fuzz runs stay fast: argv,
stdout, stderr and the environment are swapped for the call, and ``SystemExit`` is the result."""

from __future__ import annotations

import io
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from skydd.cli import main

EXIT_CODES = (0, 1, 2)


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def run_cli(home: Path, *args: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    env = {"SKYDD_HOME": str(home), "SKYDD_ACTOR": "fuzz"}
    with (mock.patch.object(sys, "argv", ["skydd", *args]), mock.patch.dict(os.environ, env),
          redirect_stdout(out), redirect_stderr(err)):
        try:
            main()
        except SystemExit as e:
            code = e.code
        else:  # pragma: no cover - main always exits
            raise AssertionError("skydd.cli.main returned without exiting")
    return Run(code if isinstance(code, int) else 1, out.getvalue(), err.getvalue())


def assert_bad_input(run: Run, *needles: str) -> None:
    """Exit 2 with exactly one line on stderr, ``skydd: …``, no traceback, no internal error."""
    lines = run.err.strip().splitlines()
    assert run.code == 2, (run.code, run.err)
    assert len(lines) == 1 and lines[0].startswith("skydd: "), run.err
    assert "Traceback" not in run.err and "internal error" not in run.err, run.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def assert_documented(run: Run) -> None:
    """Any input: exit 0, 1 or 2, and never a traceback or an internal error."""
    assert run.code in EXIT_CODES, (run.code, run.err)
    assert "Traceback" not in run.err and "internal error" not in run.err, run.err


def fuzz_settings(examples: int):
    """Hypothesis settings for one fuzz target: ``examples`` inputs, each within 2 s; no example
    database in the tree. With the per-test ``pytest.mark.timeout`` this bounds the run."""
    from datetime import timedelta

    from hypothesis import HealthCheck, settings

    return settings(max_examples=examples, deadline=timedelta(seconds=2), database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


YAML_ALPHABET = [*list("[]{}:,-&*!|>'\"#?%@` \n\t\r\\abcxyz019.+eE_~"), "\x00", "\ufeff", "\u2028", "é", "�"]
JSON_ALPHABET = [*list('[]{}:,"\\ \n\t0123456789.eE+-truefalsnul'), "\x00", "\ufeff", "é", "\\u0000", "\\ud800"]


def mutations(draw, text: str, alphabet: list[str], steps: int = 4) -> str:
    """A few random edits of ``text``: delete, duplicate or insert a span at a random place
    (inserted pieces come from ``alphabet``, whose entries may be longer than one character)."""
    from hypothesis import strategies as st

    for _ in range(draw(st.integers(0, steps))):
        n = len(text)
        i = draw(st.integers(0, n))
        j = draw(st.integers(i, min(n, i + 40)))
        op = draw(st.sampled_from(["delete", "duplicate", "insert"]))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        else:
            text = text[:i] + "".join(draw(st.lists(st.sampled_from(alphabet), max_size=6))) + text[i:]
    return text
