#!/usr/bin/python
"""Ansible module: VM hardening that ``vmware.vmware.vm_advanced_settings`` does not cover —
vMotion encryption (``config.migrateEncryption``), removing unneeded devices (floppy, serial,
parallel, USB) and VM encryption (``config.keyId``). Only what differs is changed; check mode and
diff are supported.

Removing devices from a powered-on VM fails on a real ESXi (the VM must be powered off), so the
role runs it only behind its disruptive flag. Encrypting needs a key provider registered in the
vCenter and the VM powered off: with ``power_cycle`` a running VM is shut down (through VMware
Tools when they run, else powered off), encrypted with a new key from the provider and powered on
again; without it a running VM fails the task. An encrypted VM is left alone.
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
  encrypt: {type: bool, default: false, description: encrypt each VM that has no config.keyId}
  key_provider: {type: str, description: "KMS cluster id to encrypt with (default: the vCenter's default)"}
  power_cycle: {type: bool, default: false, description: may shut a running VM down to encrypt it}
  shutdown_timeout: {type: int, default: 600, description: seconds a guest may take to shut down}
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

POLL_SECONDS = 2.0  # between looks at a shutting-down guest
NO_PROVIDER = "no key provider registered in vCenter: register a KMS or the native key provider first"


class EncryptError(Exception):
    """A VM cannot be encrypted; the message names it (or the key provider) and says why."""


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


def wait(task, timeout=120):
    deadline = time.monotonic() + timeout
    while task.info.state in ("queued", "running"):
        if time.monotonic() > deadline:
            raise TimeoutError("vSphere task did not finish in time")
        time.sleep(0.1)
    if task.info.state != "success":
        raise RuntimeError(getattr(task.info.error, "msg", task.info.error))


def needs_encryption(vm, power_cycle):
    """True when the VM has no key yet; a running VM without ``power_cycle`` is an error."""
    if vm.config.keyId is not None:
        return False
    if vm.runtime.powerState == "suspended":
        raise EncryptError(f"{vm.name}: is suspended; resume it or power it off before encrypting")
    if vm.runtime.powerState != "poweredOff" and not power_cycle:
        raise EncryptError(f"{vm.name}: must be powered off to encrypt ({vm.runtime.powerState}); "
                           "allow power_cycle")
    return True


def key_provider_of(crypto, wanted):
    """The KMS cluster id to encrypt with: ``wanted`` when registered, else the default one."""
    try:
        clusters = list(crypto.ListKmipServers() or []) if hasattr(crypto, "ListKmipServers") else []
    except vmodl.fault.MethodNotFound:
        clusters = []  # the endpoint has no key management
    if not clusters:
        raise EncryptError(NO_PROVIDER)
    ids = sorted(c.clusterId.id for c in clusters)
    if wanted:
        if wanted not in ids:
            raise EncryptError(f"key provider {wanted} is not registered in vCenter "
                               f"(registered: {', '.join(ids)})")
        return wanted
    default = [c.clusterId.id for c in clusters if c.useAsDefault]
    if not default:
        raise EncryptError("no default key provider in vCenter: mark one as default or set "
                           f"key_provider (registered: {', '.join(ids)})")
    return default[0]


def power_off(vm, timeout):
    """Shut the guest down through VMware Tools when they run, else power the VM off."""
    if vm.guest.toolsRunningStatus != "guestToolsRunning":
        wait(vm.PowerOffVM_Task())
        return
    vm.ShutdownGuest()
    deadline = time.monotonic() + timeout
    while vm.runtime.powerState != "poweredOff":
        if time.monotonic() > deadline:
            raise TimeoutError(f"the guest did not shut down within {timeout}s")
        time.sleep(POLL_SECONDS)


def encrypt(vm, crypto, provider, timeout):
    """Power off if needed, encrypt with a new key of ``provider``, power on again if it was on."""
    was_on = vm.runtime.powerState != "poweredOff"
    try:
        result = crypto.GenerateKey(keyProvider=vim.encryption.KeyProviderId(id=provider))
        if not result.success:
            raise EncryptError(f"{vm.name}: key provider {provider} did not generate a key: "
                               f"{result.reason or 'no reason given'}")
        if was_on:
            power_off(vm, timeout)
        key = vim.encryption.CryptoKeyId(keyId=result.keyId.keyId,
                                         providerId=vim.encryption.KeyProviderId(id=provider))
        wait(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(
            crypto=vim.encryption.CryptoSpecEncrypt(cryptoKeyId=key))), timeout)
        if was_on:
            wait(vm.PowerOnVM_Task(), timeout)
    except (vmodl.MethodFault, RuntimeError, TimeoutError) as err:
        left = "; it was left powered off" if was_on and vm.runtime.powerState == "poweredOff" else ""
        why = getattr(err, "msg", None) or err
        raise EncryptError(f"{vm.name}: encrypting failed: {why}{left}") from err


def encrypt_task(vms, crypto, wanted, power_cycle, timeout, check, changes, before, after):
    """Encrypt every VM without a key; decide for all of them before touching any."""
    todo = [vm for vm in vms if needs_encryption(vm, power_cycle)]
    if not todo:
        return
    provider = (wanted or "(the vCenter's default)") if check else key_provider_of(crypto, wanted)
    for vm in todo:
        cycle = " (power cycle)" if vm.runtime.powerState != "poweredOff" else ""
        if not check:
            encrypt(vm, crypto, provider, timeout)
        changes.append(f"{vm.name}: encrypt with key provider {provider}{cycle}")
        before.setdefault(vm.name, {})["encrypted"] = False
        after.setdefault(vm.name, {})["encrypted"] = True


def main():
    module = AnsibleModule(
        argument_spec=dict(
            hostname=dict(type="str", required=True), port=dict(type="int", default=443),
            username=dict(type="str", required=True), password=dict(type="str", required=True, no_log=True),
            ca_file=dict(type="path"), vms=dict(type="list", elements="str", required=True),
            migrate_encryption=dict(type="str", choices=["disabled", "opportunistic", "required"]),
            remove_device_types=dict(type="list", elements="str"),
            encrypt=dict(type="bool", default=False), key_provider=dict(type="str"),
            power_cycle=dict(type="bool", default=False), shutdown_timeout=dict(type="int", default=600)),
        supports_check_mode=True)
    if not HAS_PYVMOMI:
        module.fail_json(msg="pyvmomi is missing in the controller's Python: pip install pyvmomi")
    p = module.params
    if p["migrate_encryption"] is None and not p["remove_device_types"] and not p["encrypt"]:
        module.fail_json(msg="nothing to do: give migrate_encryption, remove_device_types or encrypt")
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
        if p["encrypt"]:
            encrypt_task([by_name[n] for n in p["vms"]], content.cryptoManager, p["key_provider"],
                         p["power_cycle"], p["shutdown_timeout"], module.check_mode, changes, before, after)
    except EncryptError as err:
        module.fail_json(msg=str(err), changes=changes)
    except (vmodl.MethodFault, RuntimeError, TimeoutError) as err:
        module.fail_json(msg=f"reconfiguring VMs failed: {getattr(err, 'msg', err)}", changes=changes)
    finally:
        Disconnect(si)
    module.exit_json(changed=bool(changes), changes=changes, diff=dict(before=before, after=after))


if __name__ == "__main__":
    main()
