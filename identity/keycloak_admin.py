"""An adapter over python-keycloak's admin API: the few calls Skydd needs, with its errors
wrapped in ``KeycloakUnavailable`` (cannot reach or log in) and ``KeycloakRefused`` (the server
said no), so callers never see library exceptions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import requests
from keycloak import KeycloakAdmin as _Admin
from keycloak import KeycloakOpenIDConnection
from keycloak.exceptions import KeycloakAuthenticationError, KeycloakConnectionError, KeycloakError

T = TypeVar("T")


class KeycloakAdminError(Exception):
    """Root of the adapter's errors."""


class KeycloakUnavailable(KeycloakAdminError):
    """Keycloak could not be reached or the admin login failed."""


class KeycloakRefused(KeycloakAdminError):
    """Keycloak answered with an error."""


def _call(what: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except KeycloakAuthenticationError as err:
        raise KeycloakUnavailable(f"{what}: admin login refused ({err.response_code})") from err
    except KeycloakConnectionError as err:
        raise KeycloakUnavailable(f"{what}: cannot reach Keycloak: {err}") from err
    except KeycloakError as err:
        body = err.error_message.decode(errors="replace") if isinstance(err.error_message, bytes) \
            else str(err.error_message)
        raise KeycloakRefused(f"{what}: HTTP {err.response_code}: {body[:300]}") from err
    except (requests.RequestException, OSError) as err:
        raise KeycloakUnavailable(f"{what}: cannot reach Keycloak: {err}") from err


class KeycloakAdmin:
    """Admin access to one realm (the admin logs in to ``master``)."""

    def __init__(self, admin: _Admin, url: str, realm: str, ca_file: str | bool) -> None:
        self._admin = admin
        self.url = url
        self.realm = realm
        self.ca_file = ca_file

    @staticmethod
    def connect(url: str, realm: str, username: str, password: str, *, ca_file: str | None = None,
                timeout: int = 30) -> KeycloakAdmin:
        verify: str | bool = ca_file or True
        conn = KeycloakOpenIDConnection(server_url=url, username=username, password=password,
                                        realm_name=realm, user_realm_name="master", verify=verify,
                                        timeout=timeout)
        admin = _Admin(connection=conn)
        _call("admin login", lambda: conn.get_token())
        return KeycloakAdmin(admin, url, realm, verify)

    # -- raw access --------------------------------------------------------------------------
    def get(self, path: str) -> Any:
        """``GET /admin/realms/<realm>/<path>`` as JSON."""
        def run() -> Any:
            r = self._admin.connection.raw_get(f"admin/realms/{self.realm}/{path}")
            if r.status_code >= 400:
                raise KeycloakRefused(f"GET {path}: HTTP {r.status_code}: {r.text[:300]}")
            return r.json() if r.content else None
        return _call(f"GET {path}", run)

    def _get_object(self, path: str) -> dict[str, Any]:
        """``get`` of a path whose answer is a JSON object (the shape Keycloak's admin API documents)."""
        answer: dict[str, Any] = self.get(path)
        return answer

    def _get_list(self, path: str) -> list[dict[str, Any]]:
        """``get`` of a path whose answer is a JSON array of objects."""
        answer: list[dict[str, Any]] = self.get(path)
        return answer

    def send(self, method: str, path: str, payload: Any = None) -> Any:
        """``POST``/``PUT``/``DELETE`` on a realm path; returns the Location id when there is one."""
        import json

        def run() -> Any:
            conn = self._admin.connection
            full = f"admin/realms/{self.realm}/{path}" if path else f"admin/realms/{self.realm}"
            data = json.dumps(payload) if payload is not None else None
            fn = {"POST": conn.raw_post, "PUT": conn.raw_put, "DELETE": conn.raw_delete}[method]
            r = fn(full, data=data) if method != "DELETE" else fn(full)
            if r.status_code >= 400:
                raise KeycloakRefused(f"{method} {path}: HTTP {r.status_code}: {r.text[:300]}")
            loc = r.headers.get("Location")
            return loc.rsplit("/", 1)[-1] if loc else None
        return _call(f"{method} {path}", run)

    # -- realm -------------------------------------------------------------------------------
    def realm_settings(self) -> dict[str, Any]:
        return _call("read realm", lambda: self._admin.get_realm(self.realm))

    def update_realm(self, payload: dict[str, Any]) -> None:
        _call("update realm", lambda: self._admin.update_realm(self.realm, payload))

    def events_config(self) -> dict[str, Any]:
        return self._get_object("events/config")

    def update_events_config(self, payload: dict[str, Any]) -> None:
        self.send("PUT", "events/config", payload)

    def user_profile(self) -> dict[str, Any]:
        return self._get_object("users/profile")

    def update_user_profile(self, profile: dict[str, Any]) -> None:
        self.send("PUT", "users/profile", profile)

    # -- flows -------------------------------------------------------------------------------
    def flows(self) -> list[dict[str, Any]]:
        return self._get_list("authentication/flows")

    def executions(self, flow_alias: str) -> list[dict[str, Any]]:
        from urllib.parse import quote

        return self._get_list(f"authentication/flows/{quote(flow_alias, safe='')}/executions")

    def authenticator_config(self, config_id: str) -> dict[str, Any]:
        return self._get_object(f"authentication/config/{config_id}")

    def required_actions(self) -> list[dict[str, Any]]:
        return self._get_list("authentication/required-actions")

    # -- clients and users -------------------------------------------------------------------
    def clients(self) -> list[dict[str, Any]]:
        return self._get_list("clients")

    def client_by_client_id(self, client_id: str) -> dict[str, Any] | None:
        found = self.get(f"clients?clientId={client_id}")
        return found[0] if found else None

    def client_secret(self, client_id: str) -> str:
        client = self.client_by_client_id(client_id)
        if client is None:
            raise KeycloakRefused(f"no client {client_id!r} in realm {self.realm}")
        secret: str = self._get_object(f"clients/{client['id']}/client-secret")["value"]
        return secret

    def user_by_username(self, username: str) -> dict[str, Any] | None:
        found = self.get(f"users?username={username}&exact=true")
        return found[0] if found else None

    def credentials(self, user_id: str) -> list[dict[str, Any]]:
        return self._get_list(f"users/{user_id}/credentials")

    def delete_credential(self, user_id: str, credential_id: str) -> None:
        self.send("DELETE", f"users/{user_id}/credentials/{credential_id}")

    def brute_force_status(self, user_id: str) -> dict[str, Any]:
        return self._get_object(f"attack-detection/brute-force/users/{user_id}")

    def clear_brute_force(self, user_id: str) -> None:
        self.send("DELETE", f"attack-detection/brute-force/users/{user_id}")

    def logout_user(self, user_id: str) -> None:
        self.send("POST", f"users/{user_id}/logout")
