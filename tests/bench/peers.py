"""The bench's peers, built once with ``go install`` from the Go module proxy and cached by version
under the project cache (``$SKYDD_CACHE``, default ``.cache/``): Open Policy Agent with the Rego
policy in ``tests/bench/decision.rego``, and oauth2-proxy as a JWT-validating forward-auth.

Nothing here runs at import time. A missing Go toolchain or a failed build yields ``None`` and a
one-line reason, and the bench goes on without that peer. ``python -m tests.bench.peers`` builds
both ahead of a run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from estate.settings import CACHE_DIR

BENCH = Path(__file__).resolve().parent
REGO_POLICY = BENCH / "decision.rego"


@dataclass(frozen=True)
class Peer:
    name: str
    module: str  # go install path
    version: str
    binary: str  # name go install writes

    def path(self) -> Path:
        return CACHE_DIR / "bench" / self.name / self.version / self.binary


OPA = Peer("opa", "github.com/open-policy-agent/opa", "v1.22.4", "opa")
OAUTH2_PROXY = Peer("oauth2-proxy", "github.com/oauth2-proxy/oauth2-proxy/v7", "v7.15.6", "oauth2-proxy")
PEERS = (OPA, OAUTH2_PROXY)


def _go() -> str | None:
    for candidate in (shutil.which("go"), "/usr/local/go/bin/go", "/usr/lib/go/bin/go"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def ensure(peer: Peer, *, timeout: float = 3600) -> tuple[Path | None, str]:
    """The cached binary of ``peer`` (built on first use, atomically), or ``None`` and why not."""
    target = peer.path()
    if target.is_file():
        return target, "cached"
    go = _go()
    if go is None:
        return None, f"{peer.name}: no Go toolchain (install Go 1.24+), skipped"
    target.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOFLAGS": "-buildvcs=false -modcacherw", "CGO_ENABLED": "0",
           "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "local")}
    env.setdefault("GOPATH", str(CACHE_DIR / "go"))
    env.setdefault("GOCACHE", str(CACHE_DIR / "go-build"))
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        env["GOBIN"] = tmp
        try:
            done = subprocess.run([go, "install", "-trimpath", f"{peer.module}@{peer.version}"],
                                  env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, f"{peer.name}: go install took longer than {timeout:.0f} s, skipped"
        built = Path(tmp) / peer.binary
        if done.returncode != 0 or not built.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"{peer.name}: go install {peer.module}@{peer.version} failed: {last[:200]}"
        os.replace(built, target)
    return target, "built"


def wait_http(url: str, proc: subprocess.Popen, *, ok: tuple[int, ...] = (200,), timeout: float = 60) -> str | None:
    """Wait until ``url`` answers; ``None`` when it does, else why not (one line)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            return f"exited with {proc.returncode}: {(err or '').strip().splitlines()[-1:] or ''}"
        try:
            if httpx.get(url, timeout=1).status_code in ok:
                return None
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return f"no answer from {url} within {timeout:.0f} s"


def start_opa(binary: Path, folder: Path, port: int, *, jwks: dict[str, Any], config: dict[str, Any],
              training: dict[str, Any]) -> subprocess.Popen:
    """``opa run --server`` on loopback with ``decision.rego`` and a data document holding the same
    JWKS, policy settings and training records Skydd uses."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data.json"
    data.write_text(json.dumps({"jwks": json.dumps(jwks), "config": config, "training": training}))
    return subprocess.Popen([str(binary), "run", "--server", "--addr", f"127.0.0.1:{port}",
                             "--log-level", "error", "--disable-telemetry", str(REGO_POLICY), str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def start_oauth2_proxy(binary: Path, port: int, *, issuer: str, client_id: str,
                       ca_file: Path) -> subprocess.Popen:
    """oauth2-proxy as a JWT-validating forward-auth (``/oauth2/auth``): bearer tokens verified
    against the realm's JWKS (signature, issuer, audience, expiry), no login flow."""
    args = [str(binary), f"--http-address=127.0.0.1:{port}", "--provider=oidc",
            f"--oidc-issuer-url={issuer}", "--skip-oidc-discovery=true",
            f"--oidc-jwks-url={issuer}/protocol/openid-connect/certs",
            f"--login-url={issuer}/protocol/openid-connect/auth",
            f"--redeem-url={issuer}/protocol/openid-connect/token",
            f"--provider-ca-file={ca_file}", f"--client-id={client_id}", "--client-secret=bench",
            "--cookie-secret=0123456789abcdef0123456789abcdef", "--cookie-secure=false",
            "--email-domain=*", "--upstream=static://202", "--skip-jwt-bearer-tokens=true",
            "--oidc-email-claim=preferred_username", "--insecure-oidc-allow-unverified-email=true",
            "--request-logging=false", "--auth-logging=false", "--standard-logging=false"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def main() -> int:
    for peer in PEERS:
        path, how = ensure(peer)
        print(f"{peer.name} {peer.version}: {path or how} ({how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
