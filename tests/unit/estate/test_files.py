"""Private files: written whole, 0600 whatever the umask, never through a link an attacker planted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from estate import files


def test_a_new_file_is_private_and_complete_even_under_a_lax_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        files.write_new(tmp_path / "key.pem", b"x" * 300_000)
    finally:
        os.umask(old)
    assert (tmp_path / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "key.pem").read_bytes() == b"x" * 300_000


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_bytes(b"first")
    with pytest.raises(FileExistsError):
        files.write_new(tmp_path / "key.pem", b"second")
    assert (tmp_path / "key.pem").read_bytes() == b"first"


def test_a_planted_link_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    (tmp_path / "key.pem").symlink_to(victim)
    with pytest.raises(FileExistsError):
        files.write_new(tmp_path / "key.pem", b"attacker's choice")
    assert victim.read_bytes() == b"untouched"


def test_replace_swaps_the_whole_file_and_leaves_no_temporary_behind(tmp_path: Path) -> None:
    target = tmp_path / "waivers.json"
    target.write_bytes(b"old")
    target.chmod(0o644)
    files.replace(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["waivers.json"]


def test_replace_over_a_planted_link_replaces_the_link_not_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    (tmp_path / "record.json").symlink_to(victim)
    files.replace(tmp_path / "record.json", b"record")
    assert victim.read_bytes() == b"untouched"
    assert not (tmp_path / "record.json").is_symlink()
    assert (tmp_path / "record.json").read_bytes() == b"record"
