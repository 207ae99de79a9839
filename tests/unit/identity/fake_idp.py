"""A small identity provider for tests and the bench: a realm's JWKS served over real HTTPS on
loopback (a test CA made with ``cryptography``), RSA keys, and a token minter shaped like
Keycloak 26 access tokens after hardening. It counts every request it serves, per path.

Certificates use fixed dates (2025-01-01 to 2045-01-01) so runs are reproducible.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

NOT_BEFORE = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
NOT_AFTER = dt.datetime(2045, 1, 1, tzinfo=dt.UTC)
CLIENT = "socialcare-app"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_tls(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for localhost/127.0.0.1; returns (ca, cert, key)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("skydd test CA")).issuer_name(_name("skydd test CA"))
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2)
            .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class RealmKey:
    """A realm signing key: private for minting, public JWK for the JWKS."""

    def __init__(self, kid: str, alg: str = "RS256") -> None:
        self.kid, self.alg = kid, alg
        if alg.startswith(("RS", "PS")):
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            algo = jwt.algorithms.RSAAlgorithm
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            algo = jwt.algorithms.ECAlgorithm
        self.jwk: dict[str, Any] = {**json.loads(algo.to_jwk(self.private.public_key())),
                                    "kid": kid, "alg": alg, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)


class FakeIdp:
    """Realms' JWKS on ``https://localhost:<port>/realms/<realm>/protocol/openid-connect/certs``."""

    def __init__(self, folder: Path, realms: tuple[str, ...] = ("socialcare", "other")) -> None:
        self.ca_file, cert, key = make_tls(folder)
        self.keys: dict[str, list[RealmKey]] = {r: [RealmKey(f"{r}-rs256")] for r in realms}
        self.requests: Counter[str] = Counter()
        self.failing = False  # answer 503 (a Keycloak that is up but broken)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                idp.requests[self.path] += 1
                parts = self.path.split("/")
                realm = parts[2] if len(parts) > 2 else ""
                if idp.failing or self.path != idp.jwks_path(realm) or realm not in idp.keys:
                    self.send_response(503 if idp.failing else 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"keys": [k.jwk for k in idp.keys[realm]]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"https://localhost:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @staticmethod
    def jwks_path(realm: str) -> str:
        return f"/realms/{realm}/protocol/openid-connect/certs"

    def issuer(self, realm: str = "socialcare") -> str:
        return f"{self.url}/realms/{realm}"

    def jwks_requests(self, realm: str = "socialcare") -> int:
        return self.requests[self.jwks_path(realm)]

    def stop(self) -> None:
        """Stop serving and close the port: Keycloak unreachable."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def inventory(self, *, realm: str = "socialcare") -> Any:
        from estate.inventory import Inventory

        return Inventory.model_validate({
            "name": "test",
            "municipalities": [{"id": m, "name": m.title()} for m in ("torsby", "sunne", "hagfors")],
            "sites": [{"id": "torsby", "name": "Torsby", "municipality": "torsby"}],
            "identity_provider": {"id": "keycloak", "url": self.url, "realm": realm,
                                  "admin_username": "env:KC_USER", "admin_password": "env:KC_PASS",
                                  "ca_file": str(self.ca_file)}})

    def claims(self, at: dt.datetime, realm: str = "socialcare", **overrides: Any) -> dict[str, Any]:
        """Claims of a hardened-realm access token for anna.torsby, issued at ``at``."""
        now = int(at.timestamp())
        claims = {"exp": now + 300, "iat": now, "auth_time": now - 60, "jti": f"jti-{now}",
                  "iss": self.issuer(realm), "aud": [CLIENT, "account"], "sub": "8f1c-anna",
                  "typ": "Bearer", "azp": CLIENT, "sid": "sid-1", "acr": "eid-card-otp",
                  "amr": ["sc", "otp"], "realm_access": {"roles": ["socialcare-user", "offline_access"]},
                  "scope": "openid profile", "preferred_username": "anna.torsby",
                  "hsaId": "SE2321000016-T001", "groups": ["torsby"]}
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(self, claims: dict[str, Any], *, realm: str = "socialcare", key: RealmKey | None = None,
             headers: dict[str, Any] | None = None) -> str:
        key = key or self.keys[realm][0]
        return jwt.encode(claims, key.private, algorithm=key.alg,
                          headers={"kid": key.kid, **(headers or {})})

    def token(self, at: dt.datetime, realm: str = "socialcare", **overrides: Any) -> str:
        return self.mint(self.claims(at, realm, **overrides), realm=realm)
