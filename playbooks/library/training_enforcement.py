#!/usr/bin/python
"""Ansible module: training gates the social-care role (Skydd level e). Syncs the directory's
staff into the training store, then takes the realm role from users without current training
and gives it back to those who completed. Idempotent; check mode lists who would change."""

from __future__ import annotations

DOCUMENTATION = r"""
module: training_enforcement
short_description: Sync Keycloak staff into the training store; enforce training on a realm role.
options:
  mode: {type: str, required: true, choices: [sync, enforce]}
  store_url: {type: str, required: true, no_log: true, description: SQLAlchemy URL of the store}
  url: {type: str, required: true, description: Keycloak base URL}
  realm: {type: str, required: true}
  admin_username: {type: str, required: true}
  admin_password: {type: str, required: true, no_log: true}
  ca_file: {type: str, description: CA bundle that signs the Keycloak TLS certificate}
  role: {type: str, default: socialcare-user}
  groups: {type: list, elements: str, required: true, description: the municipality groups}
  remove: {type: bool, default: true, description: take the role from users without current training}
  restore: {type: bool, default: true, description: give it back when training is current again (scope all)}
  scope:
    type: str
    default: all
    choices: [records, reachable, new, all]
    description: whose role may be removed — holders lacking any record of a required course,
      holders who can reach the system, those created within new_within_days, or every holder
      (which also restores the role and records the enforcement run)
  new_within_days: {type: int, default: 90}
  max_removal_ratio:
    type: float
    default: 0.5
    description: refuse to remove the role from more than this share of its holders at once
      (a store that lost its records must not lock everybody out); 1.0 disables the guard
"""

from datetime import UTC, datetime, timedelta

from ansible.module_utils.basic import AnsibleModule


def _lines(names):
    return "".join(f"{n}\n" for n in sorted(names))


def main():
    module = AnsibleModule(
        argument_spec={
            "mode": {"type": "str", "required": True, "choices": ["sync", "enforce"]},
            "store_url": {"type": "str", "required": True, "no_log": True},
            "url": {"type": "str", "required": True},
            "realm": {"type": "str", "required": True},
            "admin_username": {"type": "str", "required": True},
            "admin_password": {"type": "str", "required": True, "no_log": True},
            "ca_file": {"type": "str"},
            "role": {"type": "str", "default": "socialcare-user"},
            "groups": {"type": "list", "elements": "str", "required": True},
            "remove": {"type": "bool", "default": True},
            "restore": {"type": "bool", "default": True},
            "max_removal_ratio": {"type": "float", "default": 0.5},
            "scope": {"type": "str", "default": "all", "choices": ["records", "reachable", "new", "all"]},
            "new_within_days": {"type": "int", "default": 90},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        from identity.training_enforce import (
            DirectoryError,
            Plan,
            connect,
            execute,
            plan,
            read_directory,
            sync,
        )
        from identity.training_store import TrainingStore, TrainingStoreError, redact_url
    except ImportError as err:
        module.fail_json(msg=f"Skydd's Python packages are not importable by {__import__('sys').executable}: {err}")
    at = datetime.now(UTC)  # the module is the edge: time is read here and passed down
    try:
        store = TrainingStore(p["store_url"], create=False)
    except TrainingStoreError as err:
        module.fail_json(msg=str(err))
    try:
        admin = connect(p["url"], p["realm"], p["admin_username"], p["admin_password"], p["ca_file"])
        users = read_directory(admin, p["groups"], p["role"])
        if p["mode"] == "sync":
            changed = sync(store, users, at, p["role"], dry_run=module.check_mode)
            module.exit_json(changed=bool(changed), synced=changed, users=len(users),
                             store=redact_url(p["store_url"]),
                             diff={"before": "", "after": _lines(changed)} if changed else {})
        the_plan = plan(users, store.standings(at), p["role"], scope=p["scope"], at=at,
                        new_within=timedelta(days=p["new_within_days"]))
        the_plan = Plan(the_plan.remove if p["remove"] else (),
                        the_plan.restore if p["restore"] else (), the_plan.blocked)
        result = the_plan.to_dict()
        if the_plan.blocked:
            module.fail_json(msg=f"role {p['role']} comes through a group for "
                                 f"{', '.join(c.username for c in the_plan.blocked)}: remove the "
                                 "group's role mapping so it can be enforced per user", **result)
        holders = [u.username for u in users if u.has_role]
        if holders and len(the_plan.remove) > p["max_removal_ratio"] * len(holders):
            module.fail_json(msg=f"would remove {p['role']} from {len(the_plan.remove)} of "
                                 f"{len(holders)} holders, more than training_enforcement_max_"
                                 f"removal_ratio={p['max_removal_ratio']}; check the training "
                                 "store, or raise the ratio", **result)
        after = (set(holders) - {c.username for c in the_plan.remove}) | {c.username for c in the_plan.restore}
        if not module.check_mode:
            execute(admin, the_plan, p["role"])
        if not module.check_mode and p["scope"] == "all":
            with store.transaction() as s:
                store.record_event(s, "enforcement", at, result)
        module.exit_json(changed=the_plan.changed, **result,
                         diff={"before": _lines(holders), "after": _lines(after),
                               "before_header": f"{p['role']} holders", "after_header": f"{p['role']} holders"}
                         if the_plan.changed else {})
    except DirectoryError as err:
        module.fail_json(msg=str(err))
    except TrainingStoreError as err:
        module.fail_json(msg=str(err))
    finally:
        store.close()


if __name__ == "__main__":
    main()
