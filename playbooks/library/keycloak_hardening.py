#!/usr/bin/python
"""Ansible module: converge one part of a Keycloak realm through the admin API (python-keycloak,
via Skydd's adapter ``identity.keycloak_admin``). Idempotent; supports check and diff mode."""

from __future__ import annotations

DOCUMENTATION = r"""
module: keycloak_hardening
short_description: Converge one section of a Keycloak realm (realm fields, events, a user-profile
  attribute, an authentication flow, a client) to a desired state.
options:
  url: {type: str, required: true, description: Keycloak base URL}
  realm: {type: str, required: true}
  admin_username: {type: str, required: true}
  admin_password: {type: str, required: true, no_log: true}
  ca_file: {type: str, description: CA bundle that signs the Keycloak TLS certificate}
  section:
    type: str
    required: true
    choices: [realm, events, user_profile_attribute, flow, client, all_clients, logout_all]
  settings: {type: dict, required: true, description: the desired state of the section}
"""

import json

from ansible.module_utils.basic import AnsibleModule

_FLOW_TYPES = {"basic-flow"}


MASK = "**********"  # Keycloak never returns some config values; they count as unchanged


def _subset_differs(current, desired):
    """The keys of ``desired`` whose value differs in ``current`` (dicts compared recursively
    for ``attributes`` and ``config``)."""
    out = {}
    for key, want in desired.items():
        have = current.get(key)
        if have == MASK:
            continue
        if isinstance(want, dict) and key in ("attributes", "config"):
            sub = _subset_differs(have or {}, want)
            if sub:
                out[key] = sub
        elif isinstance(want, list) and isinstance(have, list) and key not in ("executions",):
            if sorted(map(json.dumps, want)) != sorted(map(json.dumps, have)):
                out[key] = want
        elif have != want:
            out[key] = want
    return out


def _before(current, desired):
    return {k: (_before(current.get(k) or {}, v) if isinstance(v, dict) and k in ("attributes", "config")
                else current.get(k)) for k, v in desired.items()}


def _str_attrs(settings):
    if "attributes" in settings:
        settings = dict(settings)
        settings["attributes"] = {k: v if isinstance(v, str) else json.dumps(v)
                                  for k, v in settings["attributes"].items()}
    return settings


# -- sections ---------------------------------------------------------------------------------

def realm_section(admin, settings, check):
    settings = _str_attrs(settings)
    current = admin.realm_settings()
    diff = _subset_differs(current, settings)
    if diff and not check:
        # the whole section, not only what differs: Keycloak updates some groups of fields (the
        # OTP policy) only when their leading field is present
        payload = dict(settings)
        if "attributes" in payload:
            payload["attributes"] = {**(current.get("attributes") or {}), **payload["attributes"]}
        admin.update_realm(payload)
    return bool(diff), _before(current, settings), settings


def events_section(admin, settings, check):
    current = admin.events_config()
    diff = _subset_differs(current, settings)
    if diff and not check:
        admin.update_events_config({**current, **settings})
    return bool(diff), _before(current, settings), settings


def user_profile_attribute_section(admin, settings, check):
    profile = admin.user_profile()
    attrs = profile.setdefault("attributes", [])
    current = next((a for a in attrs if a.get("name") == settings["name"]), None)
    changed = current is None or bool(_subset_differs(current, settings))
    if changed and not check:
        merged = {**(current or {}), **settings}
        profile["attributes"] = [a for a in attrs if a.get("name") != settings["name"]] + [merged]
        admin.update_user_profile(profile)
    return changed, current, settings


def _flatten(admin, alias):
    """The flow as a comparable list: (level, provider or sub-flow alias, requirement, config)."""
    out = []
    for ex in admin.executions(alias):
        config = {}
        if ex.get("authenticationConfig"):
            config = admin.authenticator_config(ex["authenticationConfig"]).get("config", {})
        name = ex.get("displayName") if ex.get("authenticationFlow") else ex.get("providerId")
        out.append({"level": ex["level"], "node": name, "requirement": ex["requirement"],
                    "config": config})
    return out


def _unmask(have, want):
    """Take the desired value wherever Keycloak masked the current one."""
    if have is None or len(have) != len(want):
        return have
    out = []
    for h, w in zip(have, want, strict=True):  # equal lengths checked above
        cfg = {k: (w["config"].get(k, v) if v == MASK else v) for k, v in h["config"].items()}
        out.append({**h, "config": cfg})
    return out


def _desired_flat(nodes, level=0):
    out = []
    for n in nodes:
        if "subflow" in n:
            out.append({"level": level, "node": n["subflow"], "requirement": n["requirement"],
                        "config": {}})
            out.extend(_desired_flat(n.get("executions", []), level + 1))
        else:
            out.append({"level": level, "node": n["provider"], "requirement": n["requirement"],
                        "config": dict((n.get("config") or {}).get("config", {}))})
    return out


def _build(admin, alias, nodes):
    from urllib.parse import quote

    for n in nodes:
        q = quote(alias, safe="")
        if "subflow" in n:
            admin.send("POST", f"authentication/flows/{q}/executions/flow",
                       {"alias": n["subflow"], "type": "basic-flow", "provider": "registration-page-form",
                        "description": n.get("description", "")})
            row = next(e for e in admin.executions(alias)
                       if e.get("authenticationFlow") and e.get("displayName") == n["subflow"])
        else:
            exec_id = admin.send("POST", f"authentication/flows/{q}/executions/execution",
                                 {"provider": n["provider"]})
            row = next(e for e in admin.executions(alias) if e["id"] == exec_id)
        if row["requirement"] != n["requirement"]:
            row["requirement"] = n["requirement"]
            admin.send("PUT", f"authentication/flows/{q}/executions", row)
        if n.get("config"):
            admin.send("POST", f"authentication/executions/{row['id']}/config",
                       {"alias": n["config"]["alias"], "config": n["config"]["config"]})
        if "subflow" in n:
            _build(admin, n["subflow"], n.get("executions", []))


_BINDINGS = {"browserFlow": "browser", "directGrantFlow": "direct grant",
             "resetCredentialsFlow": "reset credentials"}


def flow_section(admin, settings, check):
    alias = settings["alias"]
    existing = next((f for f in admin.flows() if f["alias"] == alias), None)
    want = _desired_flat(settings["executions"])
    have = _unmask(_flatten(admin, alias) if existing else None, want)
    changed = have != want
    if changed and not check:
        realm = admin.realm_settings()
        bound = [k for k in _BINDINGS if realm.get(k) == alias]
        if existing:
            if bound:  # never leave the realm bound to a half-built flow
                admin.update_realm({k: _BINDINGS[k] for k in bound})
            admin.send("DELETE", f"authentication/flows/{existing['id']}")
        admin.send("POST", "authentication/flows",
                   {"alias": alias, "description": settings.get("description", ""),
                    "providerId": "basic-flow", "topLevel": True, "builtIn": False})
        _build(admin, alias, settings["executions"])
        if bound:
            admin.update_realm({k: alias for k in bound})
    return changed, have, want


def _client_changes(admin, client, settings, check):
    settings = _str_attrs(dict(settings))
    mappers = settings.pop("protocolMappers", None)
    settings.pop("clientId", None)
    diff = _subset_differs(client, settings)
    before = _before(client, settings)
    after = dict(settings)
    if diff and not check:
        payload = dict(client)
        payload.update(diff)
        if "attributes" in diff:
            payload["attributes"] = {**(client.get("attributes") or {}), **diff["attributes"]}
        payload.pop("protocolMappers", None)
        admin.send("PUT", f"clients/{client['id']}", payload)
    changed = bool(diff)
    if mappers is not None:
        current = {m["name"]: m for m in client.get("protocolMappers") or []}
        before["protocolMappers"] = sorted(current)
        after["protocolMappers"] = sorted(m["name"] for m in mappers)
        for m in mappers:
            have = current.get(m["name"])
            if have is None:
                changed = True
                if not check:
                    admin.send("POST", f"clients/{client['id']}/protocol-mappers/models",
                               {"protocol": "openid-connect", **m})
            elif have.get("protocolMapper") != m["protocolMapper"] or _subset_differs(
                    have.get("config") or {}, m.get("config") or {}):
                changed = True
                if not check:
                    admin.send("PUT", f"clients/{client['id']}/protocol-mappers/models/{have['id']}",
                               {**have, **m, "id": have["id"], "protocol": "openid-connect"})
    return changed, before, after


def client_section(admin, settings, check):
    client = admin.client_by_client_id(settings["clientId"])
    if client is None:
        raise LookupError(f"no client {settings['clientId']!r} in realm {admin.realm}")
    client = admin.get(f"clients/{client['id']}")
    return _client_changes(admin, client, settings, check)


def all_clients_section(admin, settings, check):
    changed, before, after = False, {}, {}
    for client in admin.clients():
        c, b, a = _client_changes(admin, client, settings, check)
        if c:
            changed = True
            before[client["clientId"]], after[client["clientId"]] = b, a
    return changed, before, after


def logout_all_section(admin, settings, check):
    """End every session of the realm (disruptive: the role runs it only when allowed)."""
    if not check:
        admin.send("POST", "logout-all")
    return True, {}, {}


SECTIONS = {"logout_all": logout_all_section, "realm": realm_section, "events": events_section,
            "user_profile_attribute": user_profile_attribute_section, "flow": flow_section,
            "client": client_section, "all_clients": all_clients_section}


def main():
    module = AnsibleModule(
        argument_spec=dict(url=dict(type="str", required=True), realm=dict(type="str", required=True),
                           admin_username=dict(type="str", required=True),
                           admin_password=dict(type="str", required=True, no_log=True),
                           ca_file=dict(type="str"),
                           section=dict(type="str", required=True, choices=sorted(SECTIONS)),
                           settings=dict(type="dict", required=True)),
        supports_check_mode=True)
    p = module.params
    try:
        from identity.keycloak_admin import KeycloakAdmin, KeycloakAdminError
    except ImportError as err:
        module.fail_json(msg=f"run with Skydd's Python (ansible_python_interpreter): {err}")
    try:
        admin = KeycloakAdmin.connect(p["url"], p["realm"], p["admin_username"], p["admin_password"],
                                      ca_file=p["ca_file"])
        changed, before, after = SECTIONS[p["section"]](admin, p["settings"], module.check_mode)
    except (KeycloakAdminError, LookupError, KeyError) as err:
        module.fail_json(msg=f"{p['section']}: {err}")
    result = {"changed": changed}
    if module._diff and changed:
        result["diff"] = {"before": json.dumps(before, indent=2, sort_keys=True, default=str) + "\n",
                          "after": json.dumps(after, indent=2, sort_keys=True, default=str) + "\n"}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
