"""The adversarial corpus (issue 12): each hostile file, handed to each command that reads such a
file, ends in exit 2 (bad input) or the command's documented refusal, with one stderr line and
no traceback, within a stated bound (``pytest.mark.timeout``). Runs the real CLI entry in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .runner import assert_bad_input, assert_documented, run_cli

BOMB = ("name: x\nl0: &l0 lol\n"
        + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))
        + "municipalities: *l9\nsites: []\n")

CORPUS: dict[str, bytes] = {
    "alias-bomb": BOMB.encode(),
    "2000-brackets": b"name: " + b"[" * 2000 + b"]" * 2000 + b"\n",
    "2000-braces": b"{" * 2000,
    "10-MB": b"name: x\n" + b"#" * (10 * 1024 * 1024) + b"\n",
    "nul-bytes": b"name: x\x00\nsites: []\n",
    "invalid-utf8": b"name: \xc3\x28\n",
    "bom-only": b"\xef\xbb\xbf",
    "duplicate-keys": b"name: a\nname: b\n",
    "huge-number": b"name: x\nmunicipalities: 1" + b"0" * 5000 + b"\n",
    "python-tag": b"name: !!python/object/apply:os.system [echo owned]\n",
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_inventory_is_exit_2_one_line(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(CORPUS[name])
    r = run_cli(tmp_path / "home", "audit", "--inventory", str(path))
    assert_bad_input(r, str(path))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", ["alias-bomb", "2000-brackets", "duplicate-keys", "python-tag"])
def test_hostile_inventory_for_training_status_is_exit_2(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(CORPUS[name])
    assert_bad_input(run_cli(tmp_path / "home", "training", "status", "--inventory", str(path)), str(path))


DEEP_JSON = b"[" * 100_000 + b"]" * 100_000
REPORTS: dict[str, bytes] = {
    "deep-json": DEEP_JSON,
    "deep-object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "huge-number": b'{"schema": "skydd.report/1", "n": 1' + b"0" * 5000 + b"}",
    "nul-bytes": b'{"schema": "skydd.report/1\x00"}',
    "invalid-utf8": b'{"schema": "\xff"}',
    "bom": b'\xef\xbb\xbf{"schema": "skydd.report/1"}',
    "10-MB": b'{"schema": "skydd.report/1", "pad": "' + b"x" * (10 * 1024 * 1024) + b'"}',
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", sorted(REPORTS))
def test_hostile_report_is_refused_in_one_line(tmp_path: Path, name: str) -> None:
    """``report verify`` documents exit 1 for an invalid report; input it cannot even read
    (nesting beyond the stack) is exit 2. Never a traceback, never more than one line."""
    path = tmp_path / "report.json"
    path.write_bytes(REPORTS[name])
    r = run_cli(tmp_path / "home", "report", "verify", str(path))
    assert_documented(r)
    assert r.code in (1, 2) and len(r.err.strip().splitlines()) == 1, r.err


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", ["deep-json", "deep-object", "huge-number", "nul-bytes", "invalid-utf8", "10-MB"])
def test_hostile_log_is_refused_in_one_line(tmp_path: Path, name: str) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(REPORTS[name] + b"\n")
    r = run_cli(tmp_path / "home", "log", "verify", "--log", str(path))
    assert_documented(r)
    assert r.code in (1, 2) and len(r.err.strip().splitlines()) <= 1, r.err


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name,suffix", [("deep-json", "json"), ("huge-number", "json"),
                                         ("invalid-utf8", "csv"), ("nul-bytes", "csv")])
def test_hostile_lms_export_is_rejected_not_a_crash(tmp_path: Path, name: str, suffix: str) -> None:
    path = tmp_path / f"lms.{suffix}"
    path.write_bytes(REPORTS[name])
    r = run_cli(tmp_path / "home", "training", "import", str(path))
    assert_documented(r)
    assert r.code == 1 and "rejected" in r.err and "nothing was written" in r.err


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args", [["audit", "--control", "[red]x[/red]"],
                                  ["apply", "--check", "--control", "[red]x[/red]"]])
def test_user_text_is_echoed_literally_not_read_as_markup(tmp_path: Path, args: list[str]) -> None:
    r = run_cli(tmp_path / "home", *args)
    assert_bad_input(r, "--control '[red]x[/red]': no such control")


@pytest.mark.timeout(30)
def test_an_inventory_path_with_markup_is_echoed_literally(tmp_path: Path) -> None:
    folder = tmp_path / "[bold]inv"
    folder.mkdir()
    path = folder / "inv.yaml"
    path.write_text(json.dumps({"name": "[red]x[/red]", "colour": 1}))
    r = run_cli(tmp_path / "home", "audit", "--inventory", str(path))
    assert_bad_input(r, f"{path}:1: ")  # the path exactly as given, brackets and all


@pytest.mark.timeout(30)
def test_a_usage_error_is_exit_2_one_line(tmp_path: Path) -> None:
    assert_bad_input(run_cli(tmp_path / "home", "audit", "--[red]x[/red]"), "No such option: --[red]x[/red]")
