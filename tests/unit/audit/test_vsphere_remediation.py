"""The remediation module's calls on the managed objects vcsim lacks (service system, date/time
system, host access manager), driven through named fakes that record what they were asked."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
from pyVmomi import VmomiSupport, vim

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location(
    "vsphere_host_settings", REPO / "playbooks" / "library" / "vsphere_host_settings.py")
mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mod)


class FakeServiceSystem:
    """``vim.host.ServiceSystem``: serviceInfo plus the calls that change it."""

    def __init__(self, services: dict[str, tuple[str, bool]]) -> None:
        self.state = dict(services)
        self.calls: list[tuple[str, str, str | None]] = []

    @property
    def serviceInfo(self) -> vim.host.ServiceInfo:
        return vim.host.ServiceInfo(service=[
            vim.host.Service(key=k, label=k, policy=p, running=r, required=False, uninstallable=False)
            for k, (p, r) in self.state.items()])

    def UpdateServicePolicy(self, id: str, policy: str) -> None:
        self.calls.append(("policy", id, policy))
        self.state[id] = (policy, self.state[id][1])

    def StopService(self, id: str) -> None:
        self.calls.append(("stop", id, None))
        self.state[id] = (self.state[id][0], False)

    def StartService(self, id: str) -> None:
        self.calls.append(("start", id, None))
        self.state[id] = (self.state[id][0], True)


class FakeDateTimeSystem:
    """``vim.host.DateTimeSystem``: dateTimeInfo and UpdateDateTimeConfig."""

    def __init__(self, servers: list[str]) -> None:
        self.servers = servers
        self.calls: list[list[str]] = []

    @property
    def dateTimeInfo(self) -> vim.host.DateTimeInfo:
        return vim.host.DateTimeInfo(ntpConfig=vim.host.NtpConfig(server=self.servers))

    def UpdateDateTimeConfig(self, config: vim.host.DateTimeConfig) -> None:
        self.calls.append(list(config.ntpConfig.server))
        self.servers = list(config.ntpConfig.server)


class FakeHostAccessManager:
    """``vim.host.HostAccessManager``: lockdownMode and ChangeLockdownMode."""

    def __init__(self, mode: str) -> None:
        self.lockdownMode = mode
        self.calls: list[str] = []

    def ChangeLockdownMode(self, mode: str) -> None:
        self.calls.append(mode)
        self.lockdownMode = mode


def host(**managers):
    return SimpleNamespace(name="esx1", configManager=SimpleNamespace(**managers))


@pytest.mark.parametrize("check", [True, False])
def test_ssh_is_stopped_and_disabled_once(check: bool) -> None:
    svc = FakeServiceSystem({"TSM-SSH": ("on", True), "ntpd": ("off", False)})
    changes, before, after = [], {}, {}
    mod.services_task(host(serviceSystem=svc), {"TSM-SSH": {"policy": "off", "running": False}},
                      check, changes, before, after)
    assert before == {"TSM-SSH.policy": "on", "TSM-SSH.running": True}
    assert after == {"TSM-SSH.policy": "off", "TSM-SSH.running": False}
    assert len(changes) == 2
    assert svc.calls == ([] if check else [("policy", "TSM-SSH", "off"), ("stop", "TSM-SSH", None)])
    if not check:
        again: list[str] = []
        mod.services_task(host(serviceSystem=svc), {"TSM-SSH": {"policy": "off", "running": False}},
                          False, again, {}, {})
        assert again == [] and len(svc.calls) == 2


def test_ntp_servers_and_ntpd() -> None:
    dts = FakeDateTimeSystem([])
    svc = FakeServiceSystem({"ntpd": ("off", False)})
    changes: list[str] = []
    h = host(dateTimeSystem=dts, serviceSystem=svc)
    mod.ntp_task(h, ["ntp1.lab", "ntp2.lab"], False, changes, {}, {})
    mod.services_task(h, {"ntpd": {"policy": "on", "running": True}}, False, changes, {}, {})
    assert dts.calls == [["ntp1.lab", "ntp2.lab"]]
    assert svc.calls == [("policy", "ntpd", "on"), ("start", "ntpd", None)]
    again: list[str] = []
    mod.ntp_task(h, ["ntp1.lab", "ntp2.lab"], False, again, {}, {})
    assert again == []


def test_lockdown_mode_changes_only_when_different() -> None:
    ham = FakeHostAccessManager("lockdownDisabled")
    changes: list[str] = []
    mod.lockdown_task(host(hostAccessManager=ham), "lockdownNormal", False, changes, {}, {})
    mod.lockdown_task(host(hostAccessManager=ham), "lockdownNormal", False, changes, {}, {})
    assert ham.calls == ["lockdownNormal"] and len(changes) == 1


def test_missing_managed_object_is_reported_unsupported() -> None:
    with pytest.raises(mod.Unsupported, match="service system"):
        mod.services_task(host(serviceSystem=None), {"TSM": {"policy": "off"}}, False, [], {}, {})


def test_option_values_take_the_type_the_host_declares() -> None:
    assert isinstance(mod.typed("Security.AccountUnlockTime", 900, {"Security.AccountUnlockTime": "LongOption"}),
                      VmomiSupport.vmodlTypes["long"])
    mob = "Config.HostAgent.plugins.solo.enableMob"
    assert mod.typed(mob, "false", {mob: "BoolOption"}) is False
    assert mod.same(True, "true") and mod.same(900, 900) and not mod.same(0, 900)
    assert not mod.same(None, 5) and mod.same("sslv3,tlsv1,tlsv1.1", "sslv3,tlsv1,tlsv1.1")
