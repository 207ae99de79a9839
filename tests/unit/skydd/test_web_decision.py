"""The decision API and forward-auth through FastAPI's TestClient, with a real HTTPS JWKS."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from identity.decision import AccessDecision, Policy
from identity.settings import IdentitySettings
from identity.tokens import Verifier
from identity.training import TrainingStatus
from skydd.deny_log import DenyLog
from skydd.web.app import create_app
from tests.unit.identity.fake_idp import FakeIdp

AT = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


class Trained:
    def training_status(self, username: str, hsa_id: str | None, at: dt.datetime) -> TrainingStatus:
        return TrainingStatus(username != "untrained.sunne", "course it-security expired")


@pytest.fixture
def client(idp: FakeIdp, tmp_path: Path) -> TestClient:
    verifier = Verifier.from_inventory(idp.inventory(), IdentitySettings())
    policy = Policy(municipality_groups=frozenset({"torsby", "sunne", "hagfors"}))
    decider = AccessDecision(verifier, policy, Trained())
    return TestClient(create_app(decider, DenyLog(tmp_path / "home"), clock=lambda: AT))


def test_authz_allows_with_identity_headers(idp: FakeIdp, client: TestClient) -> None:
    r = client.get("/v1/authz", headers={"Authorization": f"Bearer {idp.token(AT)}"})
    assert r.status_code == 200
    assert r.headers["x-skydd-user"] == "anna.torsby"
    assert r.headers["x-skydd-hsa-id"] == "SE2321000016-T001"
    assert r.headers["x-skydd-municipality"] == "torsby"
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    assert "server" not in r.headers or "uvicorn" not in r.headers["server"]


def test_authz_401_without_a_valid_token(idp: FakeIdp, client: TestClient) -> None:
    r = client.get("/v1/authz")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = client.get("/v1/authz", headers={"Authorization": "Basic YWxhZGRpbjpvcGVuc2VzYW1l"})
    assert r.status_code == 401
    r = client.get("/v1/authz", headers={"Authorization": f"Bearer {idp.token(AT, aud='account')}"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    assert r.json()["reasons"][0]["cause"] == "audience"
    assert "x-skydd-user" not in r.headers


def test_authz_403_when_denied(idp: FakeIdp, client: TestClient) -> None:
    r = client.get("/v1/authz", headers={"Authorization": f"Bearer {idp.token(AT, amr=['pwd'])}"})
    assert r.status_code == 403 and [x["code"] for x in r.json()["reasons"]] == ["amr"]
    untrained = idp.token(AT, preferred_username="untrained.sunne", groups=["sunne"])
    r = client.get("/v1/authz", headers={"Authorization": f"Bearer {untrained}"})
    assert r.status_code == 403 and r.json()["reasons"][0]["code"] == "training"
    assert "x-skydd-user" not in r.headers


def test_claims_cannot_inject_headers(idp: FakeIdp, client: TestClient) -> None:
    token = idp.token(AT, preferred_username="anna\r\nX-Skydd-Admin: yes", hsaId="SE\n1")
    r = client.get("/v1/authz", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and "x-skydd-admin" not in r.headers
    assert r.headers["x-skydd-user"] == "anna%0D%0AX-Skydd-Admin: yes"


def test_post_decision_with_body_or_header(idp: FakeIdp, client: TestClient) -> None:
    r = client.post("/v1/decision", json={"token": idp.token(AT)})
    assert r.status_code == 200 and r.json()["decision"] == "allow"
    assert r.json()["municipalities"] == ["torsby"]
    r = client.post("/v1/decision", headers={"Authorization": f"Bearer {idp.token(AT, acr='1')}"})
    body = r.json()
    assert body["decision"] == "deny" and body["reasons"][0]["code"] == "acr"
    assert body["token"].startswith("sha256:")
    for bad in ({}, {"token": ""}, {"token": "x", "extra": 1}):
        assert client.post("/v1/decision", json=bad).status_code == 400
    assert client.post("/v1/decision", content=b"not json").status_code == 400
    assert client.post("/v1/decision", content=b"x" * 1_000_000).status_code == 413


def test_no_docs_or_openapi(client: TestClient) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404
    assert client.get("/v1/health").json() == {"status": "ok"}


def test_keys_unavailable_is_503(tmp_path: Path) -> None:
    own = FakeIdp(tmp_path / "idp")
    own.failing = True
    try:
        verifier = Verifier.from_inventory(own.inventory(), IdentitySettings())
        decider = AccessDecision(verifier, Policy(municipality_groups=frozenset({"torsby"})), Trained())
        c = TestClient(create_app(decider, DenyLog(tmp_path / "home"), clock=lambda: AT))
        r = c.get("/v1/authz", headers={"Authorization": f"Bearer {own.token(AT)}"})
        assert r.status_code == 503 and r.json()["reasons"][0]["cause"] == "keys_unavailable"
    finally:
        own.stop()


def test_denies_through_the_web_reach_the_audit_log(idp: FakeIdp, client: TestClient, tmp_path: Path) -> None:
    weak = idp.token(AT, amr=["pwd"])
    assert client.get("/v1/authz", headers={"Authorization": f"Bearer {weak}"}).status_code == 403
    assert client.get("/v1/authz", headers={"Authorization": f"Bearer {idp.token(AT)}"}).status_code == 200
    log = (tmp_path / "home" / "audit.log").read_text()
    assert log.count('"access.deny"') == 1 and weak not in log


def _security_headers_present(r) -> None:
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
    assert r.headers["strict-transport-security"].startswith("max-age=")


def test_every_forward_auth_answer_carries_the_security_headers(idp: FakeIdp, client: TestClient) -> None:
    for headers, status in (({}, 401), ({"Authorization": "Bearer x.y.z"}, 401),
                            ({"Authorization": f"Bearer {idp.token(AT, amr=['pwd'])}"}, 403),
                            ({"Authorization": f"Bearer {idp.token(AT)}"}, 200)):
        r = client.get("/v1/authz", headers=headers)
        assert r.status_code == status
        _security_headers_present(r)
        assert r.headers.get("content-length") == str(len(r.content))
    r = client.post("/v1/authz", headers={"Authorization": f"Bearer {idp.token(AT)}"})
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD" and "x-skydd-user" not in r.headers
    _security_headers_present(r)
    r = client.head("/v1/authz", headers={"Authorization": f"Bearer {idp.token(AT)}"})
    assert r.status_code == 200 and r.headers["x-skydd-user"] == "anna.torsby" and r.content == b""
    _security_headers_present(client.post("/v1/decision", json={"token": idp.token(AT)}))


def test_two_authorization_headers_are_refused(idp: FakeIdp, client: TestClient) -> None:
    good, weak = idp.token(AT), idp.token(AT, amr=["pwd"])
    for pair in ((good, weak), (weak, good), (good, good)):
        r = client.get("/v1/authz", headers=[("Authorization", f"Bearer {pair[0]}"),
                                             ("Authorization", f"Bearer {pair[1]}")])
        assert r.status_code == 401 and r.json()["reasons"][0]["cause"] == "ambiguous"
        assert "x-skydd-user" not in r.headers


def test_denies_are_written_off_the_event_loop(idp: FakeIdp, tmp_path: Path) -> None:
    import asyncio

    class Recording(DenyLog):
        def __init__(self, home: Path) -> None:
            super().__init__(home)
            self.on_loop: list[bool] = []

        def record(self, decision) -> None:
            try:
                asyncio.get_running_loop()
                self.on_loop.append(True)
            except RuntimeError:
                self.on_loop.append(False)
            super().record(decision)

    deny_log = Recording(tmp_path / "home")
    verifier = Verifier.from_inventory(idp.inventory(), IdentitySettings())
    decider = AccessDecision(verifier, Policy(municipality_groups=frozenset({"torsby"})), Trained())
    c = TestClient(create_app(decider, deny_log, clock=lambda: AT))
    assert c.get("/v1/authz", headers={"Authorization": f"Bearer {idp.token(AT, acr='1')}"}).status_code == 403
    assert c.get("/v1/authz", headers={"Authorization": "Bearer a.b.c"}).status_code == 401
    assert c.post("/v1/decision", json={"token": idp.token(AT, amr=["pwd"])}).json()["decision"] == "deny"
    assert deny_log.on_loop == [False, False, False]
    assert (tmp_path / "home" / "audit.log").read_text().count('"access.deny"') == 3
