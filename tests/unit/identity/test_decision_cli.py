"""``skydd decide`` and ``skydd serve`` end to end: real processes, a real HTTPS JWKS."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from ruamel.yaml import YAML

from .fake_idp import FakeIdp

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def setup(idp: FakeIdp, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "training.yaml").write_text(
        "required: [it-security]\nusers:\n  anna.torsby: {it-security: 2099-01-01T00:00:00Z}\n")
    (home / "identity.yaml").write_text(f"training_file: {home / 'training.yaml'}\n")
    inventory = tmp_path / "inventory.yaml"
    YAML(typ="safe").dump(idp.inventory().model_dump(exclude_defaults=True), inventory)
    env = {**os.environ, "SKYDD_HOME": str(home)}
    return inventory, env


def skydd(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "skydd", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def test_decide_allow_deny_and_bad_input(idp: FakeIdp, setup: tuple[Path, dict[str, str]],
                                         tmp_path: Path) -> None:
    inventory, env = setup
    now = dt.datetime.now(dt.UTC)
    good, weak = tmp_path / "good.jwt", tmp_path / "weak.jwt"
    good.write_text(idp.token(now) + "\n")
    weak.write_text(idp.token(now, amr=["pwd", "otp"], acr="1"))
    r = skydd("decide", "--token-file", str(good), "--inventory", str(inventory), env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["decision"] == "allow"
    r = skydd("decide", "--token-file", str(weak), "--inventory", str(inventory), env=env)
    assert r.returncode == 1
    assert [x["code"] for x in json.loads(r.stdout)["reasons"]] == ["acr", "amr"]
    log = (Path(env["SKYDD_HOME"]) / "audit.log").read_text()
    assert '"access.deny"' in log and weak.read_text() not in log
    assert skydd("log", "verify", env=env).returncode == 0
    from audit.log import verify_log
    from audit.signing import load_signer
    report = verify_log(Path(env["SKYDD_HOME"]) / "audit.log", load_signer(Path(env["SKYDD_HOME"])).public_key)
    assert report.problem is None and report.last_checkpoint == report.head_seq  # sealed on close
    r = skydd("decide", "--token-file", str(tmp_path / "missing.jwt"), "--inventory", str(inventory), env=env)
    assert r.returncode == 2 and "missing.jwt" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty.jwt").write_text("")
    r = skydd("decide", "--token-file", str(tmp_path / "empty.jwt"), "--inventory", str(inventory), env=env)
    assert r.returncode == 2 and "empty" in r.stderr
    no_idp = tmp_path / "no-idp.yaml"
    YAML(typ="safe").dump(idp.inventory().model_dump(exclude_defaults=True, exclude={"identity_provider"}),
                          no_idp)
    r = skydd("decide", "--token-file", str(good), "--inventory", str(no_idp), env=env)
    assert r.returncode == 2 and "identity_provider" in r.stderr and "Traceback" not in r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_forward_auth_on_real_uvicorn(idp: FakeIdp, setup: tuple[Path, dict[str, str]]) -> None:
    inventory, env = setup
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "skydd", "serve", "--port", str(port),
                             "--inventory", str(inventory)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/v1/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "skydd serve did not start"
                time.sleep(0.2)
        now = dt.datetime.now(dt.UTC)
        r = httpx.get(f"{base}/v1/authz", headers={"Authorization": f"Bearer {idp.token(now)}"})
        assert r.status_code == 200 and r.headers["x-skydd-user"] == "anna.torsby"
        r = httpx.get(f"{base}/v1/authz",
                      headers={"Authorization": f"Bearer {idp.token(now, groups=['elsewhere'])}"})
        assert r.status_code == 403
        assert httpx.get(f"{base}/v1/authz").status_code == 401
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    from skydd.commands.decide import default_workers

    assert f"({default_workers()} worker(s))" in stderr  # one worker per core by default
