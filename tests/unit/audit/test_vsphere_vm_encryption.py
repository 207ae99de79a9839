"""VM encryption in the VM remediation module (playbooks/library/vsphere_vm_settings.py): which VMs
it encrypts, with which key provider, and how it power-cycles a running VM — driven through named
fakes of the VM and the vCenter's crypto manager that record what they were asked."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
from pyVmomi import vim

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location(
    "vsphere_vm_settings", REPO / "playbooks" / "library" / "vsphere_vm_settings.py")
mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mod)


class FakeTask:
    """``vim.Task`` that has already finished successfully."""

    info = SimpleNamespace(state="success", error=None)


class FakeCryptoManager:
    """``vim.encryption.CryptoManagerKmip``: the registered KMS clusters and GenerateKey."""

    def __init__(self, clusters: dict[str, bool]) -> None:
        self.clusters = clusters  # cluster id -> useAsDefault
        self.generated: list[str] = []

    def ListKmipServers(self) -> list[vim.encryption.KmipClusterInfo]:
        return [vim.encryption.KmipClusterInfo(clusterId=vim.encryption.KeyProviderId(id=k),
                                               useAsDefault=d) for k, d in self.clusters.items()]

    def GenerateKey(self, keyProvider: vim.encryption.KeyProviderId) -> vim.encryption.CryptoKeyResult:
        self.generated.append(keyProvider.id)
        key = vim.encryption.CryptoKeyId(keyId=f"key-{len(self.generated)}", providerId=keyProvider)
        return vim.encryption.CryptoKeyResult(keyId=key, success=True)


class FakeVM:
    """``vim.VirtualMachine``: key id, power state, tools status and the calls that change them.

    ShutdownGuest takes ``shutdown_polls`` looks at the power state before the guest is off."""

    def __init__(self, name: str, *, power: str = "poweredOff", key: str | None = None,
                 tools: str = "guestToolsRunning", shutdown_polls: int = 2) -> None:
        self.name, self.power, self.key, self.shutdown_polls = name, power, key, shutdown_polls
        self.guest = SimpleNamespace(toolsRunningStatus=tools)
        self.stopping = False
        self.calls: list[tuple[str, object]] = []

    @property
    def config(self) -> SimpleNamespace:
        key = vim.encryption.CryptoKeyId(keyId=self.key) if self.key else None
        return SimpleNamespace(keyId=key)

    @property
    def runtime(self) -> SimpleNamespace:
        if self.stopping:
            self.shutdown_polls -= 1
            if self.shutdown_polls <= 0:
                self.power, self.stopping = "poweredOff", False
        return SimpleNamespace(powerState=self.power)

    def ShutdownGuest(self) -> None:
        self.calls.append(("shutdown", None))
        self.stopping = True

    def PowerOffVM_Task(self) -> FakeTask:
        self.calls.append(("poweroff", None))
        self.power = "poweredOff"
        return FakeTask()

    def PowerOnVM_Task(self) -> FakeTask:
        self.calls.append(("poweron", None))
        self.power = "poweredOn"
        return FakeTask()

    def ReconfigVM_Task(self, spec: vim.vm.ConfigSpec) -> FakeTask:
        assert self.power == "poweredOff", "encrypting a running VM"
        crypto = spec.crypto
        assert isinstance(crypto, vim.encryption.CryptoSpecEncrypt)
        self.calls.append(("encrypt", (crypto.cryptoKeyId.keyId, crypto.cryptoKeyId.providerId.id)))
        self.key = crypto.cryptoKeyId.keyId
        return FakeTask()


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mod, "POLL_SECONDS", 0)


def encrypt(vms, crypto, *, wanted=None, power_cycle=True, check=False):
    changes, before, after = [], {}, {}
    mod.encrypt_task(vms, crypto, wanted, power_cycle, 5, check, changes, before, after)
    return changes, before, after


def test_encrypted_vms_are_left_alone() -> None:
    vm = FakeVM("app", power="poweredOn", key="k0")
    crypto = FakeCryptoManager({"kms": True})
    assert encrypt([vm], crypto, power_cycle=False) == ([], {}, {})
    assert vm.calls == [] and crypto.generated == []


def test_a_running_vm_without_power_cycle_is_refused_before_anything_changes() -> None:
    off, on = FakeVM("db"), FakeVM("app", power="poweredOn")
    crypto = FakeCryptoManager({"kms": True})
    with pytest.raises(mod.EncryptError, match=r"^app: must be powered off to encrypt .*allow power_cycle"):
        encrypt([off, on], crypto, power_cycle=False)
    assert off.calls == [] and on.calls == [] and crypto.generated == []


def test_power_cycles_and_encrypts_with_the_default_provider() -> None:
    vm = FakeVM("app", power="poweredOn")
    crypto = FakeCryptoManager({"kms-old": False, "native": True})
    changes, before, after = encrypt([vm], crypto)
    assert vm.calls == [("shutdown", None), ("encrypt", ("key-1", "native")), ("poweron", None)]
    assert crypto.generated == ["native"] and vm.power == "poweredOn"
    assert changes == ["app: encrypt with key provider native (power cycle)"]
    assert before == {"app": {"encrypted": False}} and after == {"app": {"encrypted": True}}
    assert encrypt([vm], crypto) == ([], {}, {}) and len(vm.calls) == 3  # idempotent


def test_without_tools_the_vm_is_powered_off_and_a_named_provider_is_used() -> None:
    vm = FakeVM("app", power="poweredOn", tools="guestToolsNotRunning")
    off = FakeVM("db")
    crypto = FakeCryptoManager({"kms-old": False, "native": True})
    changes, _, _ = encrypt([vm, off], crypto, wanted="kms-old")
    assert vm.calls == [("poweroff", None), ("encrypt", ("key-1", "kms-old")), ("poweron", None)]
    assert off.calls == [("encrypt", ("key-2", "kms-old"))] and off.power == "poweredOff"
    assert changes[1] == "db: encrypt with key provider kms-old"


def test_check_mode_reports_and_touches_nothing() -> None:
    vm = FakeVM("app", power="poweredOn")
    crypto = FakeCryptoManager({})
    changes, _, after = encrypt([vm], crypto, check=True)
    assert changes == ["app: encrypt with key provider (the vCenter's default) (power cycle)"]
    assert after == {"app": {"encrypted": True}} and vm.calls == [] and crypto.generated == []


@pytest.mark.parametrize("clusters,wanted,problem", [
    ({}, None, "^no key provider registered in vCenter: register a KMS or the native key provider first$"),
    ({"kms": False}, None, "^no default key provider in vCenter: .*registered: kms"),
    ({"kms": True}, "other", "^key provider other is not registered in vCenter"),
])
def test_a_missing_provider_fails_clearly(clusters, wanted, problem) -> None:
    vm = FakeVM("app", power="poweredOn")
    with pytest.raises(mod.EncryptError, match=problem):
        encrypt([vm], FakeCryptoManager(clusters), wanted=wanted)
    assert vm.calls == []


def test_an_endpoint_without_key_management_has_no_provider() -> None:
    with pytest.raises(mod.EncryptError, match=r"^no key provider registered"):
        mod.key_provider_of(None, None)


def test_a_guest_that_does_not_shut_down_fails_and_says_the_vm_state() -> None:
    vm = FakeVM("app", power="poweredOn", shutdown_polls=10**6)
    with pytest.raises(mod.EncryptError, match=r"^app: encrypting failed: the guest did not shut down"):
        mod.encrypt(vm, FakeCryptoManager({"kms": True}), "kms", 0)
    assert [c[0] for c in vm.calls] == ["shutdown"]
