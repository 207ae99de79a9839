"""The patch remediation module (playbooks/library/vsphere_host_patch.py): which build each host
gets, and the order of the calls on a host, driven through named fakes of the ESXi host and its
patch manager that record what they were asked."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
from pyVmomi import vim

from tests.conftest import REPO

BASELINE_FILE = REPO / "policies" / "data" / "esxi-baseline.yaml"
DEPOT = "file:///srv/depot/"

_spec = importlib.util.spec_from_file_location(
    "vsphere_host_patch", REPO / "playbooks" / "library" / "vsphere_host_patch.py")
mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mod)


class FakeTask:
    """``vim.Task`` that has already finished, successfully or with a fault."""

    def __init__(self, fault: vim.fault.VimFault | None = None) -> None:
        self.info = SimpleNamespace(state="error" if fault else "success", error=fault)


class FakePatchManager:
    """``vim.host.PatchManager``: InstallHostPatchV2_Task stages the bundle's build for the reboot."""

    def __init__(self, host: FakeHost, fault: vim.fault.VimFault | None) -> None:
        self.host, self.fault = host, fault

    def InstallHostPatchV2_Task(self, bundleUrls: list[str], spec: object) -> FakeTask:
        assert isinstance(spec, vim.host.PatchManager.PatchManagerOperationSpec)
        self.host.calls.append(("install", bundleUrls))
        if not self.fault:
            self.host.staged = int(bundleUrls[0].rsplit("-", 2)[1])
        return FakeTask(self.fault)


class FakeHost:
    """``vim.HostSystem`` as vCenter shows it: product build, maintenance mode, connection state.

    After a reboot the host is ``notResponding`` for ``down_polls`` looks, then connected on the
    staged build — so the module has to poll for it."""

    def __init__(self, name: str, version: str, build: int, *, in_maintenance: bool = False,
                 down_polls: int = 2, install_fault: vim.fault.VimFault | None = None) -> None:
        self.name, self.version, self.build = name, version, build
        self.in_maintenance, self.down_polls, self.down = in_maintenance, down_polls, 0
        self.staged: int | None = None
        self.calls: list[tuple[str, object]] = []
        self.configManager = SimpleNamespace(patchManager=FakePatchManager(self, install_fault))

    @property
    def summary(self) -> SimpleNamespace:
        product = SimpleNamespace(version=self.version, build=str(self.build))
        return SimpleNamespace(config=SimpleNamespace(product=product))

    @property
    def runtime(self) -> SimpleNamespace:
        state = "connected"
        if self.down:
            self.down -= 1
            state = "notResponding"
        return SimpleNamespace(inMaintenanceMode=self.in_maintenance, connectionState=state)

    def EnterMaintenanceMode_Task(self, timeout: int) -> FakeTask:
        self.calls.append(("enter", timeout))
        self.in_maintenance = True
        return FakeTask()

    def RebootHost_Task(self, force: bool) -> FakeTask:
        self.calls.append(("reboot", force))
        self.build, self.down = self.staged or self.build, self.down_polls
        return FakeTask()

    def ExitMaintenanceMode_Task(self, timeout: int) -> FakeTask:
        self.calls.append(("exit", timeout))
        self.in_maintenance = False
        return FakeTask()


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mod, "POLL_SECONDS", 0)


def patch(hosts: list[FakeHost], *, check: bool = False, depot: str = DEPOT):
    changes, before, after = [], {}, {}
    mod.run([("Torsby", h) for h in hosts], mod.read_baseline(BASELINE_FILE), depot, 60, check,
            changes, before, after)
    return changes, before, after


def test_target_is_the_newest_build_of_the_host_family() -> None:
    baseline = mod.read_baseline(BASELINE_FILE)
    assert mod.target(baseline, "esx1", "8.0.2", 22380479)["build"] == 24784735
    assert mod.target(baseline, "esx1", "7.0.3", 23307199)["build"] == 24784741
    assert mod.target(baseline, "esx1", "8.0.3", 24784735) is None
    assert mod.target(baseline, "esx1", "8.0.3", 24784736) is None


def test_patches_in_order_with_the_bundle_url_and_leaves_maintenance() -> None:
    esx = FakeHost("esx1", "8.0.2", 22380479)
    changes, before, after = patch([esx])
    assert esx.calls == [
        ("enter", 60),
        ("install", ["file:///srv/depot/VMware-ESXi-8.0U3f-24784735-depot.zip"]),
        ("reboot", False),
        ("exit", 60),
    ]
    assert esx.build == 24784735 and not esx.in_maintenance
    assert changes == ["esx1: build 22380479 -> 24784735 (VMware-ESXi-8.0U3f-24784735-depot.zip)"]
    assert before == {"Torsby/esx1": {"build": 22380479}} and after == {"Torsby/esx1": {"build": 24784735}}
    assert patch([esx]) == ([], {}, {}) and len(esx.calls) == 4  # idempotent


def test_a_host_already_in_maintenance_stays_there() -> None:
    esx = FakeHost("esx1", "7.0.3", 24585291, in_maintenance=True)
    patch([esx], depot="https://depot.lab/esxi")
    assert [c[0] for c in esx.calls] == ["install", "reboot"]
    assert esx.calls[0][1] == ["https://depot.lab/esxi/VMware-ESXi-7.0U3w-24784741-depot.zip"]
    assert esx.in_maintenance


def test_hosts_at_the_baseline_are_skipped_and_check_mode_touches_nothing() -> None:
    done = FakeHost("esx1", "8.0.3", 24784735)
    behind = FakeHost("esx2", "8.0.3", 24585383)
    changes, _, after = patch([done, behind], check=True)
    assert changes == ["esx2: build 24585383 -> 24784735 (VMware-ESXi-8.0U3f-24784735-depot.zip)"]
    assert list(after) == ["Torsby/esx2"]
    assert done.calls == [] and behind.calls == [] and behind.build == 24585383


def test_an_unknown_family_fails_before_any_host_is_touched() -> None:
    first = FakeHost("esx1", "8.0.2", 22380479)
    old = FakeHost("esx2", "6.7.0", 17700523)
    with pytest.raises(mod.PatchError, match=r"esx2: ESXi 6\.7\.0 \(build 17700523\) is not in the "
                                             r"patch baseline \(supported: 7\.0, 8\.0\)"):
        patch([first, old])
    assert first.calls == []


@pytest.mark.parametrize("depot", ["", None])
def test_a_missing_depot_fails_only_when_a_host_needs_patching(depot) -> None:
    with pytest.raises(mod.PatchError, match=r"^no patch depot: set patch_depot on the hypervisor"):
        patch([FakeHost("esx1", "8.0.2", 22380479)], depot=depot, check=True)
    assert patch([FakeHost("esx1", "8.0.3", 24784735)], depot=depot) == ([], {}, {})


def test_an_install_fault_names_the_host_and_says_it_stays_in_maintenance() -> None:
    fault = vim.fault.PlatformConfigFault(text="bundle", msg="cannot download the bundle")
    esx = FakeHost("esx1", "8.0.2", 22380479, install_fault=fault)
    with pytest.raises(mod.PatchError, match=r"esx1: installing .* failed: cannot download the bundle; "
                                             r"it was left in maintenance mode"):
        patch([esx])
    assert [c[0] for c in esx.calls] == ["enter", "install"]


def test_a_host_that_does_not_come_back_on_the_build_times_out() -> None:
    esx = FakeHost("esx1", "8.0.2", 22380479, down_polls=10**6)
    url = DEPOT + "VMware-ESXi-8.0U3f-24784735-depot.zip"
    with pytest.raises(mod.PatchError, match=r"not back on build 24784735 within 0s .*notResponding"):
        mod.patch_host(esx, {"build": 24784735}, url, 0)
