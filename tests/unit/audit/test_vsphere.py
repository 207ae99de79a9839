"""The vSphere collector without a vCenter: pyvmomi's real data objects, and named fakes for the
per-host managed objects (service system, date/time system) that vcsim does not implement."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pyVmomi import vim, vmodl

from audit.collectors import run_collectors
from audit.collectors.interface import CollectorError
from audit.collectors.vsphere import (
    Placement,
    connector,
    from_inventory,
    host_ntp,
    host_services,
    shape,
)
from policies import Status, evaluate, load_catalog

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CATALOG = load_catalog().by_id()


class FakeServiceSystem:
    """Stands in for ``vim.host.ServiceSystem``: its ``serviceInfo`` property."""

    def __init__(self, services: dict[str, tuple[str, bool]] | None = None,
                 fault: Exception | None = None) -> None:
        self._services = services or {}
        self._fault = fault

    @property
    def serviceInfo(self) -> vim.host.ServiceInfo:
        if self._fault is not None:
            raise self._fault
        return vim.host.ServiceInfo(service=[
            vim.host.Service(key=k, label=k, policy=p, running=r, required=False, uninstallable=False)
            for k, (p, r) in self._services.items()])


class FakeDateTimeSystem:
    """Stands in for ``vim.host.DateTimeSystem``: its ``dateTimeInfo`` property."""

    def __init__(self, servers: list[str] | None, fault: Exception | None = None) -> None:
        self._servers = servers
        self._fault = fault

    @property
    def dateTimeInfo(self) -> vim.host.DateTimeInfo:
        if self._fault is not None:
            raise self._fault
        ntp = vim.host.NtpConfig(server=self._servers) if self._servers is not None else None
        return vim.host.DateTimeInfo(ntpConfig=ntp)


PLACEMENT = Placement("vcenter", "torsby", {"Torsby": "torsby", "Site4": "site4"},
                      {"torsby": "torsby", "site4": None}, {"socialcare-app": "socialcare"},
                      {"socialcare": "classified"})


def _tree(service_system, date_time_system):
    dc1, dc2 = vim.Datacenter("datacenter-1"), vim.Datacenter("datacenter-2")
    hosts_folder, cluster = vim.Folder("group-h4"), vim.ClusterComputeResource("domain-c1")
    host = vim.HostSystem("host-1")
    vm_folder, vm = vim.Folder("group-v2"), vim.VirtualMachine("vm-1")
    product = vim.AboutInfo(name="VMware ESXi", version="8.0.2", build="21997540",
                            fullName="VMware ESXi 8.0.2 build-21997540", apiVersion="8.0.2.0")
    floppy = vim.vm.device.VirtualFloppy(key=8000, deviceInfo=vim.Description(label="Floppy drive 1"),
                                         connectable=vim.vm.device.VirtualDevice.ConnectInfo(connected=False))
    disk = vim.vm.device.VirtualDisk(key=2000, deviceInfo=vim.Description(label="Hard disk 1"))
    return [
        ("Datacenter", "datacenter-1", dc1, {"name": "Torsby", "parent": vim.Folder("group-d1")}),
        ("Datacenter", "datacenter-2", dc2, {"name": "Site4", "parent": vim.Folder("group-d1")}),
        ("Folder", "group-h4", hosts_folder, {"name": "host", "parent": dc1}),
        ("ClusterComputeResource", "domain-c1", cluster, {"name": "c1", "parent": hosts_folder}),
        ("HostSystem", "host-1", host, {
            "name": "esx1", "parent": cluster, "summary.config.product": product,
            "config.option": [vim.option.OptionValue(key="Security.AccountLockFailures", value=3),
                              vim.option.OptionValue(key="Config.HostAgent.plugins.solo.enableMob",
                                                     value=False)],
            "config.lockdownMode": "lockdownDisabled",
            "configManager.serviceSystem": service_system,
            "configManager.dateTimeSystem": date_time_system}),
        ("Folder", "group-v2", vm_folder, {"name": "vm", "parent": dc2}),
        ("VirtualMachine", "vm-1", vm, {
            "name": "socialcare-app", "parent": vm_folder, "runtime.host": host,
            "runtime.powerState": "poweredOn", "config.template": False,
            "config.extraConfig": [vim.option.OptionValue(key="isolation.tools.copy.disable", value="TRUE")],
            "config.migrateEncryption": "opportunistic", "config.hardware.device": [disk, floppy]}),
    ]


def test_host_services_and_ntp_read_the_real_api_shape() -> None:
    svc = FakeServiceSystem({"TSM-SSH": ("on", True), "ntpd": ("on", True)})
    assert host_services(svc) == {"TSM-SSH": {"policy": "on", "running": True},
                                  "ntpd": {"policy": "on", "running": True}}
    assert host_ntp(FakeDateTimeSystem(["ntp1.lab"])) == {"servers": ["ntp1.lab"]}
    assert host_ntp(FakeDateTimeSystem(None)) == {"servers": []}


def test_shape_places_hosts_and_vms_in_their_datacenter_site() -> None:
    obs = {o.target: o for o in shape(_tree(FakeServiceSystem({"TSM-SSH": ("off", False)}),
                                             FakeDateTimeSystem(["ntp1.lab"])), PLACEMENT)}
    host, vm = obs["esx1"], obs["socialcare-app"]
    assert (host.kind, host.site, host.municipality) == ("vsphere.host", "torsby", "torsby")
    assert host.data["datacenter"] == "Torsby"
    assert host.data["product"]["build"] == "21997540"
    assert host.data["options"] == {"Security.AccountLockFailures": 3,
                                    "Config.HostAgent.plugins.solo.enableMob": False}
    assert host.data["services"]["TSM-SSH"] == {"policy": "off", "running": False}
    assert host.data["unobservable"] == {}
    assert (vm.kind, vm.site, vm.municipality) == ("vsphere.vm", "site4", None)
    assert vm.data["classification"] == "classified" and vm.data["host"] == "esx1"
    assert [d["type"] for d in vm.data["devices"]] == ["VirtualDisk", "VirtualFloppy"]
    assert vm.data["extra_config"] == {"isolation.tools.copy.disable": "TRUE"}


def _judge(control: str, observations) -> list[Status]:
    from policies import Evidence

    ev = [Evidence.observed(o.kind, o.target, "vsphere:vcenter", AT, o.data, site=o.site)
          for o in observations]
    return [f.status for f in evaluate([CATALOG[control]], ev, [], AT)]


def test_service_system_missing_is_error_never_pass() -> None:
    fault = vmodl.fault.ManagedObjectNotFound(msg="has not been completely created")
    obs = list(shape(_tree(FakeServiceSystem(fault=fault), FakeDateTimeSystem(None, fault=fault)),
                     PLACEMENT))
    host = next(o for o in obs if o.kind == "vsphere.host")
    assert "services" not in host.data and "ntp" not in host.data
    assert "ManagedObjectNotFound" in host.data["unobservable"]["services"]
    assert _judge("c.esxi-ssh-disabled", obs) == [Status.ERROR]
    assert _judge("c.esxi-ntp", obs) == [Status.ERROR]


@pytest.mark.parametrize(("services", "servers", "ssh", "ntp"), [
    ({"TSM-SSH": ("on", True), "ntpd": ("off", False)}, [], Status.FAIL, Status.FAIL),
    ({"TSM-SSH": ("off", False), "ntpd": ("on", True)}, ["ntp1.lab"], Status.PASS, Status.PASS),
])
def test_service_and_ntp_controls_judge_the_fakes(services, servers, ssh, ntp) -> None:
    obs = list(shape(_tree(FakeServiceSystem(services), FakeDateTimeSystem(servers)), PLACEMENT))
    assert _judge("c.esxi-ssh-disabled", obs) == [ssh]
    assert _judge("c.esxi-ntp", obs) == [ntp]


def test_patch_baseline_names_the_build_a_host_needs() -> None:
    obs = list(shape(_tree(FakeServiceSystem(), FakeDateTimeSystem([])), PLACEMENT))
    from policies import Evidence
    ev = [Evidence.observed(o.kind, o.target, "vsphere:vcenter", AT, o.data) for o in obs]
    (finding,) = evaluate([CATALOG["c.esxi-patch-baseline"]], ev, [], AT)
    assert finding.status is Status.FAIL
    assert "needs build 24784735" in finding.message and "VMSA-2025-0004" in finding.message


def test_connector_refuses_plain_http_and_reports_unreachable() -> None:
    with pytest.raises(CollectorError, match="must be https"):
        connector("http://127.0.0.1/sdk", "u", "p", None, False)
    connect = connector("https://127.0.0.1:9/sdk", "u", "p", None, False)
    with pytest.raises(CollectorError, match=r"unreachable|cannot connect"):
        connect()


def test_missing_ca_file_is_a_collector_error(tmp_path: Path) -> None:
    connect = connector("https://127.0.0.1:9/sdk", "u", "p", str(tmp_path / "none.pem"), False)
    with pytest.raises(CollectorError, match="CA file"):
        connect()


def test_unreadable_secret_gives_error_evidence_for_both_kinds(tmp_path: Path) -> None:
    from estate.loader import load_inventory
    from skydd.lab import LAB_INVENTORY

    inv, _ = load_inventory(LAB_INVENTORY, home=tmp_path)  # the lab inventory; vcsim's secret files are absent
    collectors = from_inventory(inv, tmp_path)
    ev = run_collectors(collectors, clock=lambda: AT)
    assert {e.kind for e in ev} == {"vsphere.host", "vsphere.vm"}
    assert all(e.error and "cannot read" in e.error for e in ev)

