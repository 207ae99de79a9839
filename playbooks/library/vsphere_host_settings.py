#!/usr/bin/python
"""Ansible module: ESXi host hardening over pyvmomi, for every host of one vCenter.

Sets advanced options (``advancedOption.UpdateOptions``), service start policy and state
(``serviceSystem``), NTP servers (``dateTimeSystem``) and lockdown mode (``hostAccessManager``).
Only what differs is changed; ``--check`` reports what would change and ``--diff`` shows it.

``community.vmware.vmware_host_config_manager`` is not used because it refuses every key that is
missing from ``advancedOption.supportedOption`` — which vCenter simulators leave empty. Where an
endpoint does not implement a managed object (vcsim has no service, date/time or host access
system), the task is reported as skipped with the reason instead of pretending it changed.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: vsphere_host_settings
short_description: Harden the ESXi hosts of a vCenter (advanced options, services, NTP, lockdown)
options:
  hostname: {type: str, required: true}
  port: {type: int, default: 443}
  username: {type: str, required: true}
  password: {type: str, required: true, no_log: true}
  ca_file: {type: path, description: CA bundle that verifies the vCenter certificate}
  datacenters: {type: list, elements: str, description: only hosts in these datacenters (default all)}
  options: {type: dict, description: advanced option key -> value}
  services: {type: dict, description: "service key -> {policy: on|off|automatic, running: bool}"}
  ntp_servers: {type: list, elements: str}
  lockdown_mode: {type: str, choices: [lockdownDisabled, lockdownNormal, lockdownStrict]}
"""

import ssl

from ansible.module_utils.basic import AnsibleModule

try:
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import VmomiSupport, vim, vmodl
    HAS_PYVMOMI = True
except ImportError:  # pragma: no cover - reported by the module
    HAS_PYVMOMI = False


class Unsupported(Exception):
    """The endpoint does not implement a managed object this task needs."""


def connect(module):
    p = module.params
    ctx = ssl.create_default_context(cafile=p["ca_file"]) if p["ca_file"] else ssl.create_default_context()
    try:
        return SmartConnect(host=p["hostname"], port=p["port"], user=p["username"], pwd=p["password"],
                            sslContext=ctx)
    except vim.fault.InvalidLogin:
        module.fail_json(msg=f"vSphere {p['hostname']}: login refused for {p['username']}")
    except Exception as err:
        module.fail_json(msg=f"vSphere {p['hostname']}:{p['port']}: cannot connect: {getattr(err, 'msg', err)}")


def hosts_of(content, datacenters):
    out = []
    for dc in content.rootFolder.childEntity:
        if not isinstance(dc, vim.Datacenter) or (datacenters and dc.name not in datacenters):
            continue
        view = content.viewManager.CreateContainerView(dc, [vim.HostSystem], True)
        try:
            out.extend((dc.name, h) for h in view.view)
        finally:
            view.Destroy()
    return sorted(out, key=lambda x: (x[0], x[1].name))


def same(current, wanted):
    if isinstance(wanted, bool) or isinstance(current, bool):
        return str(current).lower() == str(wanted).lower()
    if isinstance(wanted, int) and not isinstance(current, str):
        return current is not None and int(current) == wanted
    return str(current) == str(wanted)


def typed(key, value, supported):
    """The value in the type the host declares (long options need xsd:long)."""
    kind = supported.get(key)
    if isinstance(value, bool) or kind == "BoolOption":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if kind == "LongOption":
        return VmomiSupport.vmodlTypes["long"](int(value))
    if kind == "IntOption":
        return int(value)
    return value


def _managed(obj, what):
    if obj is None:
        raise Unsupported(f"the host has no {what}")
    return obj


def _unsupported(err):
    return isinstance(err, (vmodl.fault.ManagedObjectNotFound, vmodl.fault.MethodNotFound))


def options_task(host, wanted, check, changes, before, after):
    manager = host.configManager.advancedOption
    current = {o.key: o.value for o in (host.config.option or [])}
    supported = {d.key: type(d.optionType).__name__.rsplit(".", 1)[-1]
                 for d in (manager.supportedOption or [])}
    diff = {k: v for k, v in wanted.items() if not same(current.get(k), v)}
    if not diff:
        return
    before.update({k: current.get(k) for k in diff})
    after.update(diff)
    changes.extend(f"{host.name}: {k} {current.get(k)!r} -> {v!r}" for k, v in diff.items())
    if not check:
        manager.UpdateOptions(changedValue=[vim.option.OptionValue(key=k, value=typed(k, v, supported))
                                            for k, v in diff.items()])


def services_task(host, wanted, check, changes, before, after):
    system = _managed(host.configManager.serviceSystem, "service system")
    info = {s.key: s for s in system.serviceInfo.service}
    for key, want in wanted.items():
        svc = info.get(key)
        if svc is None:
            continue  # not installed: nothing runs
        policy, running = want.get("policy"), want.get("running")
        if policy and svc.policy != policy:
            before[f"{key}.policy"], after[f"{key}.policy"] = svc.policy, policy
            changes.append(f"{host.name}: service {key} policy {svc.policy} -> {policy}")
            if not check:
                system.UpdateServicePolicy(id=key, policy=policy)
        if running is not None and bool(svc.running) != bool(running):
            before[f"{key}.running"], after[f"{key}.running"] = svc.running, running
            changes.append(f"{host.name}: service {key} {'start' if running else 'stop'}")
            if not check:
                (system.StartService if running else system.StopService)(id=key)


def ntp_task(host, servers, check, changes, before, after):
    system = _managed(host.configManager.dateTimeSystem, "date/time system")
    info = system.dateTimeInfo
    current = list(info.ntpConfig.server or []) if info and info.ntpConfig else []
    if current != list(servers):
        before["ntp_servers"], after["ntp_servers"] = current, list(servers)
        changes.append(f"{host.name}: NTP servers {current} -> {list(servers)}")
        if not check:
            system.UpdateDateTimeConfig(config=vim.host.DateTimeConfig(
                ntpConfig=vim.host.NtpConfig(server=list(servers))))


def lockdown_task(host, mode, check, changes, before, after):
    access = _managed(host.configManager.hostAccessManager, "host access manager")
    current = access.lockdownMode
    if current != mode:
        before["lockdown_mode"], after["lockdown_mode"] = current, mode
        changes.append(f"{host.name}: lockdown {current} -> {mode}")
        if not check:
            access.ChangeLockdownMode(mode)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            hostname=dict(type="str", required=True), port=dict(type="int", default=443),
            username=dict(type="str", required=True), password=dict(type="str", required=True, no_log=True),
            ca_file=dict(type="path"), datacenters=dict(type="list", elements="str", default=[]),
            options=dict(type="dict"), services=dict(type="dict"),
            ntp_servers=dict(type="list", elements="str"),
            lockdown_mode=dict(type="str", choices=["lockdownDisabled", "lockdownNormal", "lockdownStrict"])),
        supports_check_mode=True)
    if not HAS_PYVMOMI:
        module.fail_json(msg="pyvmomi is missing in the controller's Python: pip install pyvmomi")
    p = module.params
    tasks = [(fn, p[name]) for fn, name in ((options_task, "options"), (services_task, "services"),
                                            (ntp_task, "ntp_servers"), (lockdown_task, "lockdown_mode"))
             if p[name] is not None]
    if not tasks:
        module.fail_json(msg="nothing to do: give options, services, ntp_servers or lockdown_mode")
    si = connect(module)
    changes, before, after, unsupported = [], {}, {}, []
    try:
        hosts = hosts_of(si.RetrieveContent(), p["datacenters"])
        if not hosts:
            module.fail_json(msg="no ESXi hosts found in the selected datacenters")
        for dc, host in hosts:
            hb, ha = {}, {}
            for fn, wanted in tasks:
                try:
                    fn(host, wanted, module.check_mode, changes, hb, ha)
                except Unsupported as err:
                    unsupported.append(f"{host.name}: {err}")
                except vmodl.MethodFault as err:
                    if _unsupported(err):
                        unsupported.append(f"{host.name}: {type(err).__name__.rsplit('.', 1)[-1]}: {err.msg}")
                    else:
                        module.fail_json(msg=f"{host.name}: {err.msg}", changes=changes)
            if hb or ha:
                before[f"{dc}/{host.name}"], after[f"{dc}/{host.name}"] = hb, ha
    finally:
        Disconnect(si)
    result = dict(changed=bool(changes), changes=changes, hosts=len(hosts),
                  diff=dict(before=before, after=after))
    if unsupported and not changes:
        module.exit_json(skipped=True, msg="the endpoint does not implement this API: "
                         + "; ".join(sorted(set(unsupported))[:4]), unsupported=unsupported, **result)
    if unsupported:
        result["warnings"] = [f"not implemented by the endpoint: {u}" for u in unsupported[:4]]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
