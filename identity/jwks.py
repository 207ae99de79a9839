"""The identity provider's signing keys (JWKS), fetched over verified TLS and cached.

Rules, all driven by the caller's clock (``now`` in seconds since the epoch, from ``at``):

- Keys fetched at ``T`` are used until ``T + lifespan``; then the next lookup refetches.
- A ``kid`` the cache does not hold triggers a refetch, but at most one fetch attempt per
  ``cooldown``: a flood of tokens with made-up ``kid`` values costs the identity provider at most
  one request per cooldown (key rotation still works: a new key is picked up on the first token
  that uses it once the cooldown has passed).
- When the identity provider is unreachable the last good keys stay usable for ``stale`` seconds
  past their lifespan (a warning is logged); after that every lookup raises ``KeysUnavailable``.
- Keys come only from the configured URL. Nothing in a token (``jku``, ``x5u``, ``jwk``, ``x5c``,
  or the ``kid`` itself) ever becomes part of a URL or a path: a ``kid`` is only a dict key.
- Only public signature keys are kept (``use`` absent or ``sig``; RSA, EC, OKP); encryption keys,
  private members and keys PyJWT cannot load are skipped.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWTError

from .errors import AlgorithmNotAllowed, IdentityConfigError, KeysUnavailable, UnknownKey

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 256 * 1024
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_KTY_FOR_ALG = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}

Fetch = Callable[[], bytes]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:  # never follow a redirect
        return None


def https_fetcher(url: str, *, ca_file: str | None, timeout: float) -> Fetch:
    """A fetch of ``url`` over HTTPS with certificate and hostname verification always on.

    ``ca_file`` is the CA to trust (the lab's); ``None`` uses the system's trust store. Redirects
    are not followed and proxies from the environment are not used.
    """
    if not url.startswith("https://"):
        raise IdentityConfigError(f"JWKS URL {url!r} must use https")

    def fetch() -> bytes:
        try:
            ctx = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as err:
            raise KeysUnavailable(f"cannot load the CA file {ca_file}: {err}") from err
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect(),
                                             urllib.request.HTTPSHandler(context=ctx))
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with opener.open(request, timeout=timeout) as resp:
                if resp.status != 200:
                    raise KeysUnavailable(f"{url}: HTTP {resp.status}")
                body = resp.read(MAX_JWKS_BYTES + 1)
        except urllib.error.HTTPError as err:
            raise KeysUnavailable(f"{url}: HTTP {err.code}") from err
        except (urllib.error.URLError, OSError, ssl.SSLError) as err:
            reason = getattr(err, "reason", err)
            raise KeysUnavailable(f"{url}: unreachable: {reason}") from err
        if len(body) > MAX_JWKS_BYTES:
            raise KeysUnavailable(f"{url}: JWKS larger than {MAX_JWKS_BYTES} bytes")
        return bytes(body)

    return fetch


def parse_jwks(body: bytes) -> dict[str, list[dict[str, Any]]]:
    """The usable public signature keys of a JWKS document, by ``kid``.

    Raises ``ValueError`` when the document is not a JWKS or holds no usable key.
    """
    doc = json.loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    keys: dict[str, list[dict[str, Any]]] = {}
    for jwk in doc["keys"]:
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid or jwk.get("use", "sig") != "sig":
            continue
        if jwk.get("kty") not in ("RSA", "EC", "OKP") or _PRIVATE_MEMBERS & jwk.keys():
            continue
        try:
            PyJWK(jwk)
        except (PyJWTError, ValueError, TypeError, KeyError):
            continue  # an unusable or unknown key is skipped, not fatal
        keys.setdefault(kid, []).append(jwk)
    if not keys:
        raise ValueError("the JWKS holds no usable signature key")
    return keys


class JwksCache:
    """Cached signing keys with refetch on unknown ``kid`` (rate limited) and a stale window."""

    def __init__(self, fetch: Fetch, *, lifespan: float = 300, cooldown: float = 30,
                 stale: float = 3600, source: str = "jwks") -> None:
        self._fetch = fetch
        self.lifespan, self.cooldown, self.stale, self.source = lifespan, cooldown, stale, source
        self._lock = threading.Lock()
        self._keys: dict[str, list[dict[str, Any]]] = {}
        self._prepared: dict[tuple[str, str], PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._last_error: str | None = None
        self.fetch_attempts = 0

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def state(self, now: float) -> Mapping[str, Any]:
        """What the cache holds, for status pages: age of the keys and the last error."""
        age = None if self._fetched_at is None else now - self._fetched_at
        return {"source": self.source, "kids": sorted(self._keys), "age_seconds": age,
                "stale": age is not None and age >= self.lifespan,
                "fetch_attempts": self.fetch_attempts, "last_error": self._last_error}

    def may_fetch(self, now: float) -> bool:
        """Whether any lookup at ``now`` may go to the network (false within the cooldown)."""
        return self._may_attempt(now)

    def would_fetch(self, kid: str, now: float) -> bool:
        """Whether ``key(kid, …, now)`` would go to the network (for callers on an event loop)."""
        if not self._may_attempt(now):
            return False
        return (self._fetched_at is None or now - self._fetched_at >= self.lifespan
                or kid not in self._keys)

    def key(self, kid: str, alg: str, now: float) -> PyJWK:
        """The key ``kid`` bound to ``alg``; raises ``UnknownKey``, ``AlgorithmNotAllowed`` or
        ``KeysUnavailable``."""
        self._ensure_fresh(now)
        prepared = self._prepared.get((kid, alg))
        if prepared is not None:
            return prepared
        if kid not in self._keys:
            with self._lock:
                if kid not in self._keys and self._may_attempt(now):
                    try:
                        self._refresh(now, why="unknown kid")
                    except KeysUnavailable:
                        pass  # the cached keys stay; the kid is unknown either way
            if kid not in self._keys:
                raise UnknownKey("the token's kid is not a signing key of the identity provider")
        return self._prepare(kid, alg)

    def _prepare(self, kid: str, alg: str) -> PyJWK:
        kty = _KTY_FOR_ALG.get(alg[:2])
        for jwk in self._keys.get(kid, []):
            if jwk.get("kty") != kty or jwk.get("alg", alg) != alg:
                continue
            try:
                prepared = PyJWK(jwk, algorithm=alg)
            except (PyJWTError, ValueError, TypeError, KeyError):
                continue
            self._prepared[(kid, alg)] = prepared
            return prepared
        raise AlgorithmNotAllowed(f"key {kid!r} does not sign with {alg}")

    def _may_attempt(self, now: float) -> bool:
        return self._attempted_at is None or abs(now - self._attempted_at) >= self.cooldown

    def _ensure_fresh(self, now: float) -> None:
        fetched = self._fetched_at
        if fetched is not None and now - fetched < self.lifespan:  # (``at`` before the fetch: fresh)
            return
        with self._lock:
            fetched = self._fetched_at
            if fetched is not None and now - fetched < self.lifespan:
                return
            attempted = self._may_attempt(now)
            if attempted:
                try:
                    self._refresh(now, why="expired" if fetched is not None else "first use")
                    return
                except KeysUnavailable:
                    pass
            if fetched is None:
                raise KeysUnavailable(f"no signing keys yet from {self.source}: {self._last_error}")
            if now - fetched > self.lifespan + self.stale:
                raise KeysUnavailable(
                    f"signing keys from {self.source} are {int(now - fetched)} s old, beyond the "
                    f"stale window; last error: {self._last_error}")
            if attempted:  # once per failed attempt, not once per token
                log.warning("using stale signing keys from %s (%d s old): %s", self.source,
                            int(now - fetched), self._last_error)

    def _refresh(self, now: float, *, why: str) -> None:
        """Fetch and replace the keys. Caller holds the lock."""
        self._attempted_at = now
        self.fetch_attempts += 1
        try:
            keys = parse_jwks(self._fetch())
        except KeysUnavailable as err:
            self._last_error = str(err)
            log.warning("JWKS refresh (%s) failed: %s", why, err)
            raise
        except (ValueError, UnicodeDecodeError) as err:
            self._last_error = f"{self.source}: bad JWKS: {err}"
            log.warning("JWKS refresh (%s) failed: %s", why, self._last_error)
            raise KeysUnavailable(self._last_error) from err
        self._keys, self._prepared = keys, {}
        self._fetched_at, self._last_error = now, None
