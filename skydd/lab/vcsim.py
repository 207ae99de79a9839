"""skydd-vcsim, govmomi's vCenter simulator with the host APIs level c needs, as the lab's vSphere.

The simulator is the Go module in ``vsphere_sim/`` (why: ``docs/adr/0007-vsphere-simulator.md``):
vcsim's model plus, per host, the service system (SSH, ESXi Shell, ntpd), the date/time system
(NTP), the access manager (lockdown mode), a patch manager that installs an offline bundle from a
``file://`` depot, and a reboot that applies it. ``go build`` fetches govmomi from the Go module
proxy; the binary is cached under ``.cache/vcsim/<digest of the sources>/``, so only the first
``up`` builds it. It runs on ``127.0.0.1:18989`` with TLS from a certificate made here
(``ca.pem`` is what clients trust), a generated username and password (files ``username`` and
``password``, 0600, which the lab inventory references), two datacenters (Torsby and the fourth
site), two hosts each on ESXi builds below the patch baseline, and the classified social-care VMs
beside others. A setup pass over the API then leaves the platform as a municipality might find
it: weak advanced options, SSH and the ESXi Shell running, no NTP and no lockdown on every host;
classified VMs unencrypted with console copy/paste, 3D, host information, a floppy and a serial
port, and vMotion encryption off. A key provider (``skydd-lab-kms``) is registered as the
vCenter's default, and ``depot/`` holds stand-ins named as the baseline's offline bundles.

The simulator keeps its state in memory: a restart is a fresh, unhardened lab.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from estate.settings import CACHE_DIR

from .errors import LabError
from .service import LabService, Progress

SOURCE = Path(__file__).with_name("vsphere_sim")  # the Go module of skydd-vcsim
HOST, PORT = "127.0.0.1", 18989
USERNAME = "skydd-vcadmin"

# Datacenters in creation order (vcsim names them DC0, DC1 …) and what the setup renames.
DATACENTERS = ("Torsby", "Site4")
VM_NAMES = (("socialcare-app", "socialcare-db", "real-estate-app"),
            ("socialcare-db-mirror", "erp-mirror", "build-agent"))
CLASSIFIED_VMS = ("socialcare-app", "socialcare-db", "socialcare-db-mirror")
# ESXi builds as found, in host order (Torsby's two, then site 4's): two versions, all below the
# patch baseline, each a different release.
HOST_BUILDS = ("8.0.2-22380479", "8.0.3-24022510", "7.0.3-23307199", "8.0.3-24585383")
KMS_CLUSTER = "skydd-lab-kms"  # the key provider registered as the vCenter's default

# Host advanced options as found: every one is weaker than the level-c controls ask.
INSECURE_HOST_OPTIONS: dict[str, Any] = {
    "Security.AccountLockFailures": 0,
    "Security.AccountUnlockTime": 0,
    "Security.PasswordQualityControl": "retry=3 min=disabled,disabled,disabled,7,7",
    "Security.PasswordHistory": 0,
    "UserVars.ESXiShellInteractiveTimeOut": 0,
    "UserVars.ESXiShellTimeOut": 0,
    "UserVars.DcuiTimeOut": 0,
    "UserVars.HostClientSessionTimeout": 0,
    "Syslog.global.logHost": "",
    "Syslog.global.auditRecord.storageEnable": False,
    "Syslog.global.auditRecord.remoteEnable": False,
    "Mem.ShareForceSalting": 0,
    "Config.HostAgent.plugins.solo.enableMob": True,
    "Net.BlockGuestBPDU": 0,
    "UserVars.SuppressShellWarning": 1,
    "UserVars.ESXiVPsDisabledProtocols": "sslv3",
    "Annotations.WelcomeMessage": "",
    "VMkernel.Boot.execInstalledOnly": False,
}
# Classified VMs as found.
INSECURE_VM_SETTINGS = {
    "isolation.tools.copy.disable": "FALSE",
    "isolation.tools.paste.disable": "FALSE",
    "isolation.tools.dnd.disable": "FALSE",
    "isolation.device.connectable.disable": "FALSE",
    "isolation.tools.diskShrink.disable": "FALSE",
    "isolation.tools.diskWiper.disable": "FALSE",
    "RemoteDisplay.maxConnections": "40",
    "tools.guestlib.enableHostInfo": "TRUE",
    "mks.enable3d": "TRUE",
    "log.keepOld": "100",
}


def source_digest() -> str:
    """A digest of the simulator's sources: a changed source builds a new binary."""
    h = hashlib.sha256()
    for path in sorted([SOURCE / "go.mod", SOURCE / "go.sum", *SOURCE.glob("*.go")]):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def binary_path() -> Path:
    return CACHE_DIR / "vcsim" / source_digest() / "skydd-vcsim"


def _go() -> str:
    for candidate in (shutil.which("go"), "/usr/local/go/bin/go", "/usr/lib/go/bin/go"):
        if candidate and Path(candidate).is_file():
            return candidate
    raise LabError("vcsim: the Go toolchain is missing (needed once to build the lab's vCenter): "
                   "install Go 1.24 or newer (https://go.dev/dl or Debian bookworm-backports golang) "
                   "and run again")


def ensure_binary(progress: Progress) -> Path:
    """The cached skydd-vcsim binary, built with ``go build`` on first use (atomically)."""
    target = binary_path()
    if target.is_file():
        return target
    go = _go()
    target.parent.mkdir(parents=True, exist_ok=True)
    progress("building skydd-vcsim (govmomi, as vsphere_sim/go.mod pins it, from the Go module proxy; "
             "first run only: a few minutes on 2 cores)")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        built = Path(tmp) / "skydd-vcsim"
        env = {**os.environ, "GOFLAGS": "-buildvcs=false -modcacherw",
               "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "local")}
        env.setdefault("GOPATH", str(CACHE_DIR / "go"))
        env.setdefault("GOCACHE", str(CACHE_DIR / "go-build"))  # also when HOME is unset
        done = subprocess.run([go, "build", "-trimpath", "-o", str(built), "."], cwd=SOURCE,
                              env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0 or not built.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise LabError(f"vcsim: go build of {SOURCE} failed: {last}")
        os.replace(built, target)
    return target


def make_tls(state: Path, at: datetime) -> None:
    """A CA and a server certificate for 127.0.0.1/localhost (``ca.pem``, ``server.pem``, ``server.key``)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Skydd lab"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("Skydd lab vCenter CA"))
          .issuer_name(name("Skydd lab vCenter CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(at - timedelta(minutes=5))
          .not_valid_after(at + timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                         critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(at - timedelta(minutes=5)).not_valid_after(at + timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address(HOST))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    _write(state / "server.key", key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()), 0o600)
    _write(state / "server.pem", cert.public_bytes(pem), 0o644)
    _write(state / "ca.pem", ca.public_bytes(pem), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    tmp.replace(path)


def make_depot(depot: Path) -> None:
    """The lab's patch depot: for each version, a stand-in file named as the offline bundle of
    the newest release the baseline lists (skydd-vcsim reads the build from the name)."""
    from policies.named.level_c import load_baseline

    depot.mkdir(parents=True, exist_ok=True)
    for releases in load_baseline("esxi-baseline").values():
        bundle = depot / releases[-1]["bundle"]
        if not bundle.exists():
            _write(bundle, b"Skydd lab stand-in for an ESXi offline bundle\n", 0o644)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Service(LabService):
    name = "vcsim"

    @property
    def endpoint(self) -> str:
        return f"https://{HOST}:{PORT}/sdk"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "vcsim.pid"

    def _pid(self) -> int | None:
        """The PID of the vcsim this lab started, if it still runs."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if cmdline and cmdline[0].endswith(b"/skydd-vcsim") else None

    def status(self) -> dict[str, Any]:
        pid = self._pid()
        up = pid is not None and _port_open(HOST, PORT)
        return {"state": "up" if up else "down", "endpoint": self.endpoint,
                "ca_file": str(self.state_dir / "ca.pem"), "pid": pid,
                "username_file": str(self.state_dir / "username"),
                "password_file": str(self.state_dir / "password")}

    def up(self, progress: Progress) -> None:
        if self.status()["state"] == "up":
            progress(f"already up at {self.endpoint}")
            return
        self._stop(progress)  # whatever a crashed run left
        if _port_open(HOST, PORT):
            raise LabError(f"vcsim: port {PORT} on {HOST} is taken by another program")
        binary = ensure_binary(progress)
        state = self.state_dir
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write(state / "username", USERNAME.encode() + b"\n", 0o600)
        _write(state / "password", secrets.token_urlsafe(18).encode() + b"\n", 0o600)
        make_tls(state, datetime.now(UTC))
        progress(f"starting skydd-vcsim on {HOST}:{PORT}")
        with open(state / "vcsim.log", "ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                [str(binary), "-l", f"{HOST}:{PORT}", "-username", str(state / "username"),
                 "-password", str(state / "password"), "-tlscert", str(state / "server.pem"),
                 "-tlskey", str(state / "server.key"), "-dc", str(len(DATACENTERS)),
                 "-cluster", "1", "-host", "2", "-standalone-host", "0", "-vm", "3", "-ds", "1",
                 "-builds", ",".join(HOST_BUILDS)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True)
        _write(self.pid_file, f"{proc.pid}\n".encode(), 0o644)
        deadline = time.monotonic() + 30
        while not _port_open(HOST, PORT):
            if proc.poll() is not None:
                raise LabError(f"vcsim exited with {proc.returncode}: see {state / 'vcsim.log'}")
            if time.monotonic() > deadline:
                self._stop(progress)
                raise LabError("vcsim did not listen within 30 s")
            time.sleep(0.2)
        progress("setting up datacenters, hosts and VMs as found (unhardened)")
        try:
            make_depot(state / "depot")
            seed(self.endpoint, USERNAME, (state / "password").read_text().strip(),
                 str(state / "ca.pem"))
        except Exception as err:
            self._stop(progress)
            raise LabError(f"vcsim: setup over the API failed: {err}") from err
        progress(f"up at {self.endpoint}")

    def down(self, progress: Progress) -> None:
        self._stop(progress)
        progress("stopped")

    def _stop(self, progress: Progress) -> None:
        pid = self._pid()
        if pid is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                for _ in range(50):
                    _reap(pid)
                    if self._pid() is None:
                        break
                    time.sleep(0.1)
                if self._pid() is None:
                    break
        self.pid_file.unlink(missing_ok=True)


def _reap(pid: int) -> None:
    """Collect the exit status when vcsim is this process's child (else it is init's)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# -- the setup pass: the platform as found -------------------------------------------------------

def _wait(task: Any) -> None:
    while task.info.state in ("queued", "running"):
        time.sleep(0.05)
    if task.info.state != "success":
        raise LabError(f"vcsim task failed: {task.info.error}")


def seed(url: str, username: str, password: str, ca_file: str) -> None:
    """Rename the simulator's objects after the lab and weaken them as a municipality finds them."""
    import ssl
    from urllib.parse import urlsplit

    import pyVmomi
    from pyVim import connect as pyvim

    # pyVim's functions and pyVmomi's data objects carry no annotations: used through Any.
    vim: Any = pyVmomi.vim
    smart_connect: Any = pyvim.SmartConnect
    disconnect: Any = pyvim.Disconnect
    parts = urlsplit(url)
    si = smart_connect(host=parts.hostname, port=parts.port, user=username, pwd=password,
                       sslContext=ssl.create_default_context(cafile=ca_file))
    try:
        content = si.RetrieveContent()
        dcs = [e for e in content.rootFolder.childEntity if isinstance(e, vim.Datacenter)]
        dcs.sort(key=lambda d: d.name)
        for dc, dc_name, vm_names in zip(dcs, DATACENTERS, VM_NAMES, strict=True):  # vcsim -dc made them
            hosts = _all(content, dc, vim.HostSystem)  # vcsim cannot rename hosts: DC0_C0_H0 …
            vms = sorted(_all(content, dc, vim.VirtualMachine), key=lambda v: v.name)
            _wait(dc.Rename_Task(dc_name))
            for host in hosts:
                host.configManager.advancedOption.UpdateOptions(changedValue=[
                    vim.option.OptionValue(key=k, value=v) for k, v in INSECURE_HOST_OPTIONS.items()])
            for vm, name in zip(vms, vm_names, strict=False):  # names the first VMs, by simulator name
                _wait(vm.Rename_Task(name))
                if name in CLASSIFIED_VMS:
                    _wait(vm.ReconfigVM_Task(spec=_insecure_vm_spec(vim)))
        crypto = content.cryptoManager
        crypto.RegisterKmipServer(server=vim.encryption.KmipServerSpec(
            clusterId=vim.encryption.KeyProviderId(id=KMS_CLUSTER),
            info=vim.encryption.KmipServerInfo(name="kms1", address="kms.dc.socialcare.lab", port=5696)))
        crypto.MarkDefault(clusterId=vim.encryption.KeyProviderId(id=KMS_CLUSTER))
    finally:
        disconnect(si)


def _all(content: Any, root: Any, kind: Any) -> list[Any]:
    view = content.viewManager.CreateContainerView(root, [kind], True)
    try:
        return list(view.view)
    finally:
        view.Destroy()


def _insecure_vm_spec(vim: Any) -> Any:
    floppy = vim.vm.device.VirtualFloppy(
        key=-1, deviceInfo=vim.Description(label="Floppy drive 1", summary="Remote"),
        backing=vim.vm.device.VirtualFloppy.RemoteDeviceBackingInfo(deviceName="", useAutoDetect=False))
    serial = vim.vm.device.VirtualSerialPort(
        key=-2, deviceInfo=vim.Description(label="Serial port 1", summary="Remote"),
        backing=vim.vm.device.VirtualSerialPort.URIBackingInfo(direction="server",
                                                               serviceURI="tcp://:2001"),
        yieldOnPoll=True)
    return vim.vm.ConfigSpec(
        migrateEncryption="disabled",
        extraConfig=[vim.option.OptionValue(key=k, value=v) for k, v in INSECURE_VM_SETTINGS.items()],
        deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="add", device=floppy),
                      vim.vm.device.VirtualDeviceSpec(operation="add", device=serial)])
