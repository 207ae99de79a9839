"""Audit history against a real PostgreSQL: a throwaway cluster made with Debian's ``initdb`` in a
temporary folder, started as the ``postgres`` user on a free loopback port with password
authentication and a server time zone other than UTC, and stopped at the end."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from audit import log
from audit.history import History, HistoryError, drift
from audit.log import line_hash
from audit.log.witness import latest
from audit.signing import load_signer
from estate.settings import Settings
from policies import Evidence
from skydd.auditing import Selection, run_audit
from tests.conftest import require_root, unavailable

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PASSWORD = "history-lab-secret"


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        message = ("PostgreSQL server binaries not found: install the Debian package 'postgresql' "
                   "(listed in .ci/debian-packages; run .ci/debian-deps)")
        unavailable(message)
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    require_root()
    bin_dir = _pg_bin()
    pg = pwd.getpwnam("postgres")
    root = Path(tempfile.mkdtemp(prefix="skydd-history-pg-"))
    data, pwfile = root / "data", root / "pwfile"
    pwfile.write_text(PASSWORD + "\n")
    os.chown(root, pg.pw_uid, pg.pw_gid)
    os.chown(pwfile, pg.pw_uid, pg.pw_gid)
    pwfile.chmod(0o600)
    port = _free_port()
    init = _as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
                        "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-sync")
    assert init.returncode == 0, init.stderr
    opts = (f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c timezone=Europe/Stockholm "
            "-c fsync=off")
    start = _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", opts, "-l",
                         str(root / "server.log"), "-w", "-t", "60", "start")
    assert start.returncode == 0, start.stderr + (root / "server.log").read_text(errors="replace")
    try:
        yield f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _report(rid: str, generated_at: str, statuses: dict[str, str]) -> dict:
    return {"id": rid, "inventory": {"name": "pg-lab", "digest": "sha256:0"},
            "generated_at": generated_at, "summary": {"status": "noncompliant"},
            "findings": [{"control": k.split("|")[0], "target": k.split("|")[1], "status": s}
                         for k, s in statuses.items()]}


def test_history_on_postgresql_keeps_instants_in_utc_and_finds_drift(pg_url: str) -> None:
    with History(pg_url) as history:
        assert history.engine.dialect.name == "postgresql"
        with history.engine.connect() as conn:
            assert conn.execute(text("show timezone")).scalar() == "Europe/Stockholm"
        history.record(_report("pg-1", "2026-11-25T14:00:00+02:00",
                               {"a.mirror|socialcare": "fail", "a.drill|socialcare": "pass"}))
        prev = history.previous("pg-lab")
        assert prev["generated_at"] == AT and prev["generated_at"].utcoffset() == timedelta(0)
        with history.engine.connect() as conn:
            utc_wall = conn.execute(text(
                "select to_char(generated_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI') from audits")).scalar()
        assert utc_wall == "2026-11-25 12:00"
        second = _report("pg-2", "2026-11-26T12:00:00Z",
                         {"a.mirror|socialcare": "pass", "a.drill|socialcare": "error"})
        d = drift(history.previous("pg-lab"), second["findings"])
        assert d["previous"] == {"id": "pg-1", "generated_at": "2026-11-25T12:00:00.000000Z"}
        assert d["newly_fixed"] == [{"control": "a.mirror", "target": "socialcare"}]
        assert d["newly_failing"] == [{"control": "a.drill", "target": "socialcare"}]
        history.record(second)
        assert [a["id"] for a in history.audits("pg-lab")] == ["pg-2", "pg-1"]
        with pytest.raises(HistoryError, match="cannot record audit pg-2"):
            history.record(second)


def test_wrong_password_is_one_clear_error_without_the_secret(pg_url: str) -> None:
    bad = pg_url.replace(PASSWORD, "wrong-password")
    with pytest.raises(HistoryError) as err:
        History(bad)
    assert "cannot open" in str(err.value) and "password" in str(err.value)
    assert "wrong-password" not in str(err.value) and PASSWORD not in str(err.value)


def test_audit_keeps_history_in_postgresql_by_url(pg_url: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYDD_HISTORY_URL", pg_url)
    settings = Settings(home=tmp_path / "home")
    selection = Selection.parse(None, "d.key-files-private", None)
    ids = []
    for n, mode in enumerate(("0644", "0600")):
        at = AT + timedelta(days=n)
        bundle = tmp_path / f"bundle{n}"
        kind = bundle / "evidence" / "files.keystore"
        kind.mkdir(parents=True)
        (bundle / "manifest.json").write_text(json.dumps({"schema": "skydd.bundle/1"}))
        data = {"path": "/srv/pki", "files": [
            {"path": "/srv/pki/ca.key", "type": "file", "mode": mode, "uid": 0, "gid": 0}]}
        ev = Evidence.observed("files.keystore", "pki", "files:pki", at, data, site="torsby",
                               municipality="torsby")
        (kind / "pki.json").write_text(json.dumps(ev.to_dict()))
        result = run_audit(settings, None, selection, bundle=bundle, out_dir=tmp_path / f"r{n}",
                           clock=lambda at=at: at)
        ids.append(result.report["id"])
    assert result.report["drift"]["previous"]["id"] == ids[0]
    assert result.report["drift"]["newly_fixed"] == [{"control": "d.key-files-private", "target": "pki"}]
    assert not (settings.home / "history.db").exists()  # the URL, not SQLite, was used
    with History(pg_url) as history:
        assert [a["id"] for a in history.audits("socialcare-lab")][:2] == ids[::-1]
    with History(pg_url) as history:  # the same store witnessed the audits' checkpoints
        held = latest(history, load_signer(settings.home).public_key)
    lines = settings.audit_log.read_bytes().splitlines()
    assert held is not None and (held.size, held.head) == (len(lines), line_hash(lines[-1]))


def test_the_witness_on_postgresql_stays_one_chain_and_refuses_a_rollback(
        pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYDD_HISTORY_URL", pg_url)
    home = tmp_path / "witnessed"
    signer = load_signer(home)
    said: list[str] = []

    def write(n: int) -> None:  # concurrent writers, each recording in the witness
        for i in range(6):
            log.append(home / "audit.log", signer, "waiver.request", f"w{n}", {"i": i}, warn=said.append)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert said == []
    with History(pg_url) as history, history.engine.connect() as conn:
        chain = conn.execute(text("select previous, size from witness_checkpoints where origin = "
                                  ":o order by size"), {"o": signer.key_id}).all()
    assert [p for p, _ in chain[1:]] == [s for _, s in chain[:-1]]  # each extends the one before
    assert chain[-1][1] == 1 + 3 * 6 * 2
    path = home / "audit.log"
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:5]))  # cut back
    log.append(path, signer, "waiver.request", "mallory", {}, warn=said.append)
    assert len(said) == 1 and "witness refused" in said[0]
    env = {**os.environ, "SKYDD_HOME": str(home), "SKYDD_HISTORY_URL": pg_url}
    r = subprocess.run([str(Path(sys.executable).parent / "skydd"), "log", "verify"],
                       capture_output=True, text=True, env=env, timeout=120, check=False)
    assert r.returncode == 1 and f"held {chain[-1][1]} lines" in r.stderr
