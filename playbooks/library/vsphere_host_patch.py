#!/usr/bin/python
"""Ansible module: bring every ESXi host of one vCenter to the patch baseline over pyvmomi.

The baseline (``policies/data/esxi-baseline.yaml``) lists the releases of each ``major.minor``
version; a host's target is the newest release of its version. A host below it is, one at a time:
put in maintenance mode (unless it already is), given the release's offline bundle from the depot
folder (``patchManager.InstallHostPatchV2_Task``), rebooted, and waited for until it is connected
again on the target build; the module then takes it out of maintenance mode if it put it there.
A host at or above its target is left alone, so a second run changes nothing. ``--check`` reports
the builds that would change and ``--diff`` shows them.

Every target is decided before any host is touched: a version the baseline does not list fails
the task without patching anything.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: vsphere_host_patch
short_description: Install the baseline build on the ESXi hosts of a vCenter (maintenance mode, reboot)
options:
  hostname: {type: str, required: true}
  port: {type: int, default: 443}
  username: {type: str, required: true}
  password: {type: str, required: true, no_log: true}
  ca_file: {type: path, description: CA bundle that verifies the vCenter certificate}
  datacenters: {type: list, elements: str, description: only hosts in these datacenters (default all)}
  baseline_file: {type: path, required: true, description: the skydd.esxi-baseline/1 YAML file}
  depot: {type: str, description: "URL of the folder holding the offline bundles (https:// or file://)"}
  maintenance_timeout: {type: int, default: 1800, description: seconds for each step of one host}
"""

import re
import ssl
import time

from ansible.module_utils.basic import AnsibleModule

try:
    import yaml
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim, vmodl
    HAS_PYVMOMI = True
except ImportError:  # pragma: no cover - reported by the module
    HAS_PYVMOMI = False

POLL_SECONDS = 5.0  # between looks at a rebooting host


class PatchError(Exception):
    """A host cannot be brought to the baseline; the message names it and says why."""


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


def wait(task, timeout):
    deadline = time.monotonic() + timeout
    while task.info.state in ("queued", "running"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"vSphere task did not finish within {timeout}s")
        time.sleep(0.1)
    if task.info.state != "success":
        raise RuntimeError(getattr(task.info.error, "msg", task.info.error))


def read_baseline(path):
    """``major.minor`` -> releases (build, release, bundle), oldest first."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as err:
        raise PatchError(f"baseline {path}: cannot read: {err}") from err
    ok = isinstance(doc, dict) and doc.get("schema") == "skydd.esxi-baseline/1"
    versions = doc.get("versions") if ok else None
    if not isinstance(versions, dict) or not versions:
        raise PatchError(f"baseline {path}: not a skydd.esxi-baseline/1 file with versions")
    out = {}
    for version, releases in versions.items():
        if not isinstance(releases, list) or not releases \
                or not all(isinstance(r, dict) and isinstance(r.get("build"), int) for r in releases):
            raise PatchError(f"baseline {path}: versions.{version}: releases need a build number")
        out[str(version)] = sorted(releases, key=lambda r: r["build"])
    return out


def family(version):
    m = re.match(r"^(\d+)\.(\d+)", str(version or ""))
    return f"{m.group(1)}.{m.group(2)}" if m else None


def target(baseline, name, version, build):
    """The release the host must be brought to, or None when it is at or above it."""
    releases = baseline.get(family(version))
    if not releases:
        raise PatchError(f"{name}: ESXi {version} (build {build}) is not in the patch baseline "
                         f"(supported: {', '.join(sorted(baseline))}); upgrade it by hand")
    newest = releases[-1]
    if build >= newest["build"]:
        return None
    if not newest.get("bundle"):
        raise PatchError(f"{name}: the baseline names no bundle for {newest.get('release')} "
                         f"(build {newest['build']})")
    return newest


def bundle_url(depot, bundle):
    return depot.rstrip("/") + "/" + bundle


def await_build(host, build, timeout):
    """Poll until the rebooted host is connected again and reports ``build``."""
    deadline = time.monotonic() + timeout
    while True:
        now, state = host.summary.config.product.build, host.runtime.connectionState
        if str(now) == str(build) and state == "connected":
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"not back on build {build} within {timeout}s (build {now}, {state})")
        time.sleep(POLL_SECONDS)


def patch_host(host, release, url, timeout):
    """Maintenance mode, install, reboot, wait for the build, leave maintenance mode."""
    entered = False
    try:
        if not host.runtime.inMaintenanceMode:
            wait(host.EnterMaintenanceMode_Task(timeout=timeout), timeout)
            entered = True
        wait(host.configManager.patchManager.InstallHostPatchV2_Task(
            bundleUrls=[url], spec=vim.host.PatchManager.PatchManagerOperationSpec()), timeout)
        wait(host.RebootHost_Task(force=False), timeout)
        await_build(host, release["build"], timeout)
        if entered:
            wait(host.ExitMaintenanceMode_Task(timeout=timeout), timeout)
    except (vmodl.MethodFault, RuntimeError, TimeoutError) as err:
        left = "; it was left in maintenance mode" if entered else ""
        why = getattr(err, "msg", None) or err
        raise PatchError(f"{host.name}: installing {url} failed: {why}{left}") from err


def run(hosts, baseline, depot, timeout, check, changes, before, after):
    """Decide every host's target first, then patch the ones below it, in order."""
    plan = []
    for dc, host in hosts:
        product = host.summary.config.product
        if not str(product.build).isdigit():
            raise PatchError(f"{host.name}: build {product.build!r} is not a build number")
        build = int(product.build)
        release = target(baseline, host.name, product.version, build)
        if release is not None:
            plan.append((dc, host, build, release))
    if plan and not depot:
        names = ", ".join(h.name for _, h, _, _ in plan)
        raise PatchError("no patch depot: set patch_depot on the hypervisor in the inventory "
                         f"({len(plan)} host(s) need patching: {names})")
    for dc, host, build, release in plan:
        if not check:
            patch_host(host, release, bundle_url(depot, release["bundle"]), timeout)
        changes.append(f"{host.name}: build {build} -> {release['build']} ({release['bundle']})")
        key = f"{dc}/{host.name}"
        before[key], after[key] = {"build": build}, {"build": release["build"]}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            hostname=dict(type="str", required=True), port=dict(type="int", default=443),
            username=dict(type="str", required=True), password=dict(type="str", required=True, no_log=True),
            ca_file=dict(type="path"), datacenters=dict(type="list", elements="str", default=[]),
            baseline_file=dict(type="path", required=True), depot=dict(type="str", default=""),
            maintenance_timeout=dict(type="int", default=1800)),
        supports_check_mode=True)
    if not HAS_PYVMOMI:
        module.fail_json(msg="pyvmomi or PyYAML is missing in the controller's Python: "
                             "pip install pyvmomi pyyaml")
    p = module.params
    try:
        baseline = read_baseline(p["baseline_file"])
    except PatchError as err:
        module.fail_json(msg=str(err))
    si = connect(module)
    changes, before, after = [], {}, {}
    try:
        hosts = hosts_of(si.RetrieveContent(), p["datacenters"])
        if not hosts:
            module.fail_json(msg="no ESXi hosts found in the selected datacenters")
        run(hosts, baseline, p["depot"] or "", p["maintenance_timeout"], module.check_mode,
            changes, before, after)
    except PatchError as err:
        module.fail_json(msg=str(err), changes=changes)
    except vmodl.MethodFault as err:
        module.fail_json(msg=f"reading the ESXi hosts failed: {err.msg}", changes=changes)
    finally:
        Disconnect(si)
    module.exit_json(changed=bool(changes), changes=changes, hosts=len(hosts),
                     diff=dict(before=before, after=after))


if __name__ == "__main__":
    main()
