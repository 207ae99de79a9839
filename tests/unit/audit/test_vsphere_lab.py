"""The vcsim lab service's pieces that need no running simulator: its TLS material, the cached
binary, the patch depot, and stopping only the process it started."""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from skydd.lab import vcsim
from skydd.lab.errors import LabError


def test_tls_material_chains_to_its_ca_and_names_loopback(tmp_path: Path) -> None:
    vcsim.make_tls(tmp_path, datetime(2026, 11, 25, tzinfo=UTC))
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert oct((tmp_path / "server.key").stat().st_mode & 0o777) == "0o600"


def test_cached_binary_is_used_without_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vcsim, "CACHE_DIR", tmp_path)
    cached = tmp_path / "vcsim" / vcsim.source_digest() / "skydd-vcsim"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"#!/bin/sh\n")
    monkeypatch.setattr(vcsim, "_go", lambda: pytest.fail("go must not run when the binary is cached"))
    assert vcsim.ensure_binary(lambda msg: None) == cached


def test_a_changed_source_builds_a_new_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("go.mod", "go.sum", "main.go"):
        (src / name).write_text(name)
    monkeypatch.setattr(vcsim, "SOURCE", src)
    first = vcsim.binary_path()
    (src / "main.go").write_text("package main // changed")
    assert vcsim.binary_path() != first and vcsim.binary_path().name == "skydd-vcsim"


def test_depot_holds_the_newest_bundle_of_each_version(tmp_path: Path) -> None:
    from policies.named.level_c import load_baseline

    vcsim.make_depot(tmp_path / "depot")
    names = sorted(p.name for p in (tmp_path / "depot").iterdir())
    assert names == sorted(r[-1]["bundle"] for r in load_baseline("esxi-baseline").values())
    assert "VMware-ESXi-8.0U3f-24784735-depot.zip" in names


def test_missing_go_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vcsim, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(vcsim.shutil, "which", lambda name: None)
    monkeypatch.setattr(vcsim.Path, "is_file", lambda self: False)
    with pytest.raises(LabError, match=r"Go toolchain is missing.*install Go"):
        vcsim.ensure_binary(lambda msg: None)


def test_a_pid_file_naming_another_program_is_never_signalled(tmp_path: Path) -> None:
    svc = vcsim.Service(tmp_path)
    assert svc.status()["state"] == "down"
    svc.state_dir.mkdir(parents=True)
    svc.pid_file.write_text(f"{os.getpid()}\n")  # this test's own Python, not vcsim
    assert svc.status()["pid"] is None and svc.status()["state"] == "down"
    svc.down(lambda msg: None)  # must not kill us
    assert not svc.pid_file.exists()
    status = svc.status()
    assert status["endpoint"] == f"https://127.0.0.1:{vcsim.PORT}/sdk"
    assert status["ca_file"].endswith("lab/vcsim/ca.pem")
