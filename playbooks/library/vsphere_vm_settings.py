#!/usr/bin/python
"""Ansible module: VM hardening that ``vmware.vmware.vm_advanced_settings`` does not cover —
vMotion encryption (``config.migrateEncryption``) and removing unneeded devices (floppy, serial,
parallel, USB). Only what differs is changed; check mode and diff are supported.

Removing devices from a powered-on VM fails on a real ESXi (the VM must be powered off), so the
role runs it only behind its disruptive flag.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: vsphere_vm_settings
short_description: Set vMotion encryption and remove unneeded devices of named VMs
options:
  hostname: {type: str, required: true}
  port: {type: int, default: 443}
  username: {type: str, required: true}
  password: {type: str, required: true, no_log: true}
  ca_file: {type: path}
  vms: {type: list, elements: str, required: true, description: VM names; each must exist}
  migrate_encryption: {type: str, choices: [disabled, opportunistic, required]}
  remove_device_types: {type: list, elements: str, description: "e.g. VirtualFloppy, VirtualSerialPort"}
"""

import ssl
import time

from ansible.module_utils.basic import AnsibleModule

try:
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim, vmodl
    HAS_PYVMOMI = True
except ImportError:  # pragma: no cover
    HAS_PYVMOMI = False


def connect(module):
    p = module.params
    ctx = ssl.create_default_context(cafile=p["ca_file"]) if p["ca_file"] else ssl.create_default_context()
    try:
        return SmartConnect(host=p["hostname"], port=p["port"], user=p["username"], pwd=p["password"],
                            sslContext=ctx)
    except vim.fault.InvalidLogin:
        module.fail_json(msg=f"vSphere {p['hostname']}: login refused for {p['username']}")
    except Exception as err:  # noqa: BLE001
        module.fail_json(msg=f"vSphere {p['hostname']}:{p['port']}: cannot connect: {getattr(err, 'msg', err)}")


def wait(task, timeout=120):
    deadline = time.monotonic() + timeout
    while task.info.state in ("queued", "running"):
        if time.monotonic() > deadline:
            raise TimeoutError("vSphere task did not finish in time")
        time.sleep(0.1)
    if task.info.state != "success":
        raise RuntimeError(getattr(task.info.error, "msg", task.info.error))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            hostname=dict(type="str", required=True), port=dict(type="int", default=443),
            username=dict(type="str", required=True), password=dict(type="str", required=True, no_log=True),
            ca_file=dict(type="path"), vms=dict(type="list", elements="str", required=True),
            migrate_encryption=dict(type="str", choices=["disabled", "opportunistic", "required"]),
            remove_device_types=dict(type="list", elements="str")),
        supports_check_mode=True)
    if not HAS_PYVMOMI:
        module.fail_json(msg="pyvmomi is missing in the controller's Python: pip install pyvmomi")
    p = module.params
    if p["migrate_encryption"] is None and not p["remove_device_types"]:
        module.fail_json(msg="nothing to do: give migrate_encryption or remove_device_types")
    si = connect(module)
    changes, before, after = [], {}, {}
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        try:
            by_name = {vm.name: vm for vm in view.view}
        finally:
            view.Destroy()
        missing = [n for n in p["vms"] if n not in by_name]
        if missing:
            module.fail_json(msg=f"no such VM in the vCenter: {', '.join(missing)}")
        forbidden = set(p["remove_device_types"] or [])
        for name in p["vms"]:
            vm = by_name[name]
            spec = vim.vm.ConfigSpec()
            vb, va = {}, {}
            current = vm.config.migrateEncryption
            if p["migrate_encryption"] is not None and current != p["migrate_encryption"]:
                spec.migrateEncryption = p["migrate_encryption"]
                vb["migrate_encryption"], va["migrate_encryption"] = current, p["migrate_encryption"]
                changes.append(f"{name}: migrateEncryption {current} -> {p['migrate_encryption']}")
            removed = [d for d in vm.config.hardware.device
                       if type(d).__name__.rsplit(".", 1)[-1] in forbidden]
            if removed:
                spec.deviceChange = [vim.vm.device.VirtualDeviceSpec(operation="remove", device=d)
                                     for d in removed]
                labels = [d.deviceInfo.label for d in removed]
                vb["devices"], va["devices"] = labels, []
                changes.append(f"{name}: remove {', '.join(labels)}")
            if vb:
                before[name], after[name] = vb, va
                if not module.check_mode:
                    wait(vm.ReconfigVM_Task(spec=spec))
    except (vmodl.MethodFault, RuntimeError, TimeoutError) as err:
        module.fail_json(msg=f"reconfiguring VMs failed: {getattr(err, 'msg', err)}", changes=changes)
    finally:
        Disconnect(si)
    module.exit_json(changed=bool(changes), changes=changes, diff=dict(before=before, after=after))


if __name__ == "__main__":
    main()
