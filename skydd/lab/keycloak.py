"""Lab Keycloak: the Maven Central dist, run on HTTPS at https://localhost:8443 with client
certificates ``request`` and a truststore holding only the lab e-ID CA.

The dist zip is downloaded once (SHA-1 checked against the file published beside it), unpacked
and built (``kc.sh build``) under ``.cache/keycloak/``. Each ``$SKYDD_HOME`` gets its own server
home under ``lab/keycloak/dist`` (its own ``bin``, ``conf`` and ``data``; ``lib``, ``themes`` and
``providers`` link to the cached build), so two homes never share state. The realm ``socialcare``
is imported as found: password login only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from estate.settings import CACHE_DIR

from .errors import LabError
from .service import LabService, Progress

VERSION = "26.7.3"
DIST_URL = (f"https://repo1.maven.org/maven2/org/keycloak/keycloak-quarkus-dist/{VERSION}/"
            f"keycloak-quarkus-dist-{VERSION}.zip")
HOSTNAME, HTTPS_PORT, MANAGEMENT_PORT = "localhost", 8443, 9000
URL = f"https://{HOSTNAME}:{HTTPS_PORT}"
REALM = "socialcare"
REALM_FILE = Path(__file__).with_name("keycloak-realm.json")
BUILD_OPTIONS = ("--db=dev-file", "--cache=local", "--health-enabled=true",
                 "--https-client-auth=request", "--https-management-client-auth=none")
READY_TIMEOUT = 600.0  # the first start imports the realm; two busy cores are slow
# Relative to the server's conf/ folder (Keycloak resolves CRL paths there): lab/pki/crl.pem.
CRL_RELATIVE_PATH = "../../../pki/crl.pem"

# Cards the lab issues: every staff member, plus the probe's cards.
PROBE_USER, LOCKOUT_USER = "probe.card", "probe.lockout"
PROBE_CARDS = {  # card name: (username, issuer, revoked)
    "probe.card": (PROBE_USER, "eid", False),
    "probe.card-revoked": (PROBE_USER, "eid", True),
    "probe.card-foreign": (PROBE_USER, "foreign", False),
    "probe.lockout": (LOCKOUT_USER, "eid", False),
}
# The officers' console (docs/adr/0012-console.md): its confidential client, and the users whose
# TOTP secret the lab sets at import (so a browser test can answer the OTP form): the two
# officers of the lab roster and one staff member without the officer role.
CONSOLE_CLIENT, CONSOLE_URL = "skydd-console", "https://localhost:8700"
CONSOLE_USERS = ("greta.officer", "olof.officer", "tove.staff")


def java_home() -> Path:
    """Temurin 25 where present, else OpenJDK 17, from /usr/lib/jvm."""
    root = Path("/usr/lib/jvm")
    for pattern in ("temurin-25-jdk*", "temurin-25*", "java-25-*", "java-21-*", "temurin-21*",
                    "java-17-openjdk*"):
        for cand in sorted(root.glob(pattern)):
            if (cand / "bin" / "java").exists():
                return cand
    raise LabError("no Java under /usr/lib/jvm: install it with 'apt-get install openjdk-17-jre-headless'")


class Service(LabService):
    name = "keycloak"

    # -- paths -------------------------------------------------------------------------------
    @property
    def pki_dir(self) -> Path:
        return self.home / "lab" / "pki"

    @property
    def server_home(self) -> Path:
        return self.state_dir / "dist"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "keycloak.log"

    # -- interface ---------------------------------------------------------------------------
    def up(self, progress: Progress) -> None:
        from identity.eid.lab import LabPki

        self.state_dir.mkdir(parents=True, exist_ok=True)
        pid = self._running_pid()
        if pid is not None:
            progress(f"adopting the running server (pid {pid})")
            self._wait_ready(pid, progress)
            self._ensure_console(progress)
            self._console_hint(progress)
            return
        self.pid_file.unlink(missing_ok=True)
        self._port_free()
        at = datetime.now(UTC)
        pki = LabPki(self.pki_dir)
        pki.ensure(at)
        self._issue_cards(pki, at)
        built = self._ensure_build(progress)
        self._prepare_home(built)
        username, password = self._admin_credentials()
        staff_password = self._secret("staff-password")
        console_env = self._console_secrets()
        java = java_home()
        progress(f"starting Keycloak {VERSION} with {java.name}")
        cmd = [str(self.server_home / "bin" / "kc.sh"), "start", "--optimized",
               f"--hostname={HOSTNAME}", f"--https-port={HTTPS_PORT}",
               f"--http-management-port={MANAGEMENT_PORT}",
               f"--https-certificate-file={pki.server_pem}",
               f"--https-certificate-key-file={pki.server_key}",
               f"--https-trust-store-file={pki.eid_ca_pem}",
               # the server's own truststore: Keycloak verifies the e-ID CA's CRL signature here
               f"--truststore-paths={pki.eid_ca_pem}", "--import-realm", "--cache=local"]
        env = {**os.environ, "JAVA_HOME": str(java), "KC_BOOTSTRAP_ADMIN_USERNAME": username,
               "KC_BOOTSTRAP_ADMIN_PASSWORD": password, "SKYDD_LAB_STAFF_PASSWORD": staff_password,
               **console_env,
               "JAVA_OPTS_KC_HEAP": "-Xms64m -Xmx768m",
               # a lab server: the C1-only JIT starts faster on two busy cores
               "JAVA_OPTS_APPEND": "-XX:TieredStopAtLevel=1"}
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=self.state_dir, start_new_session=True)
        self.pid_file.write_text(str(proc.pid))
        try:
            self._wait_ready(proc.pid, progress)
            self._as_found_profile(progress)
        except BaseException:
            self._stop(proc.pid)
            raise
        self._ensure_console(progress)
        self._console_hint(progress)

    def _ensure_console(self, progress: Progress) -> None:
        """A realm imported before the console existed lacks its client, role and users: add
        them (Keycloak's partial import, existing ones skipped) with this home's secrets."""
        from identity.keycloak_admin import KeycloakAdmin, KeycloakAdminError

        try:
            admin = KeycloakAdmin.connect(URL, REALM, *self._admin_credentials(),
                                          ca_file=str(self.pki_dir / "ca.pem"))
            if admin.client_by_client_id(CONSOLE_CLIENT) is not None:
                return
            text = REALM_FILE.read_text()
            env = {"SKYDD_LAB_STAFF_PASSWORD": self._secret("staff-password"), **self._console_secrets()}
            for name, value in env.items():
                text = text.replace("${" + name + "}", value)
            realm = json.loads(text)
            part = {"ifResourceExists": "SKIP",
                    "roles": {"realm": [r for r in realm["roles"]["realm"] if r["name"] == "security-officer"]},
                    "users": [u for u in realm["users"] if u["username"] in CONSOLE_USERS],
                    "clients": [c for c in realm["clients"] if c["clientId"] == CONSOLE_CLIENT]}
            admin.send("POST", "partialImport", part)
            self._issue_console_cards()
            progress(f"added the officers' console client {CONSOLE_CLIENT}, its role and users")
        except (KeycloakAdminError, OSError, ValueError, KeyError) as err:
            progress(f"could not add the officers' console to the realm: {err}")

    def _issue_console_cards(self) -> None:
        from identity.eid import CardIdentity
        from identity.eid.lab import LabPki

        pki = LabPki(self.pki_dir)
        realm = json.loads(REALM_FILE.read_text())
        for u in realm["users"]:
            if u["username"] in CONSOLE_USERS and pki.card(u["username"]) is None:
                pki.issue_card(u["username"], CardIdentity(u["attributes"]["hsaId"][0], u["firstName"],
                                                           u["lastName"]), datetime.now(UTC))

    def _console_hint(self, progress: Progress) -> None:
        progress(self.console_hint())

    def console_hint(self) -> str:
        """How to open the officers' console as the lab officer, in one line."""
        pki = self.pki_dir
        return (f"officers' console (after 'skydd apply --level d'): skydd console --tls-cert "
                f"{pki / 'server.pem'} --tls-key {pki / 'server.key'} --client-secret "
                f"file:{self.state_dir / 'console-client-secret'}; then open {CONSOLE_URL}/ in a browser "
                f"holding greta.officer's card ('skydd lab card greta.officer --out greta.p12', import it) "
                f"and sign in with the code from 'skydd lab otp greta.officer'")

    def console_card(self, username: str, out: Path) -> None:
        """Write ``username``'s lab card (certificate and key) as PKCS#12 without a password, 0600,
        for importing into a browser."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.serialization import pkcs12

        from estate import files

        self._console_user(username)
        cert, key = self.pki_dir / "cards" / f"{username}.pem", self.pki_dir / "cards" / f"{username}.key"
        if not cert.exists() or not key.exists():
            raise LabError(f"{username} has no card yet: start the lab ('skydd lab up')")
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
        blob = pkcs12.serialize_key_and_certificates(
            username.encode(), private, x509.load_pem_x509_certificate(cert.read_bytes()),  # type: ignore[arg-type]
            None, serialization.NoEncryption())
        files.replace(out, blob, 0o600)

    def console_otp(self, username: str, now: float) -> tuple[str, float]:
        """The next TOTP code of a console user and the seconds until it is valid (0: now)."""
        from identity.totp import OtpStore

        self._console_user(username)
        store = OtpStore(self.console_otp_dir)
        if store.secret(username) is None:
            raise LabError(f"{username} has no OTP secret yet: start the lab ('skydd lab up')")
        return store.next_code(username, now)

    @staticmethod
    def _console_user(username: str) -> None:
        if username not in CONSOLE_USERS:
            from estate.errors import InputError

            raise InputError(f"{username!r}: not a lab console user (known: {', '.join(CONSOLE_USERS)})")

    def down(self, progress: Progress) -> None:
        pid = self._running_pid()
        if pid is not None:
            progress(f"stopping Keycloak (pid {pid})")
            self._stop(pid)
        self.pid_file.unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        up = self._running_pid() is not None and self._ready()
        return {"state": "up" if up else "down", "endpoint": URL, "realm": REALM,
                "issuer": f"{URL}/realms/{REALM}", "ca_file": str(self.pki_dir / "ca.pem"),
                "management": f"https://{HOSTNAME}:{MANAGEMENT_PORT}", "state_dir": str(self.state_dir),
                "console": {"url": CONSOLE_URL, "client_id": CONSOLE_CLIENT,
                            "client_secret": f"file:{self.state_dir / 'console-client-secret'}",
                            "otp_dir": str(self.console_otp_dir),
                            "tls_cert": str(self.pki_dir / "server.pem"),
                            "tls_key": str(self.pki_dir / "server.key")}}

    # -- process -----------------------------------------------------------------------------
    def _running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if str(self.server_home).encode() in cmdline else None

    def _stop(self, pid: int) -> None:
        for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                    break
                time.sleep(0.3)
            else:
                continue
            # the leader is gone; make sure the rest of the group is too
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        raise LabError(f"Keycloak (pid {pid}) did not stop")

    def _port_free(self) -> None:
        import socket

        for port in (HTTPS_PORT, MANAGEMENT_PORT):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    raise LabError(f"port {port} is in use by another process (another lab home's "
                                   "Keycloak?): stop it with 'skydd lab down' in that home")

    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki_dir / "ca.pem"))

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"https://{HOSTNAME}:{MANAGEMENT_PORT}/health/ready",
                                        context=self._ssl(), timeout=3) as r:
                status: int = r.status
                return status == 200
        except (OSError, urllib.error.URLError, ssl.SSLError):
            return False

    def _wait_ready(self, pid: int, progress: Progress) -> None:
        start = time.monotonic()
        last = 0.0
        while time.monotonic() - start < READY_TIMEOUT:
            if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                raise LabError(f"Keycloak exited during start; see {self.log_file}:\n{self._log_tail()}")
            if self._ready():
                progress(f"ready in {time.monotonic() - start:.0f} s at {URL}")
                return
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                progress(f"waiting for {URL} ({last - start:.0f} s)")
            time.sleep(1.0)
        raise LabError(f"Keycloak not ready after {READY_TIMEOUT:.0f} s; see {self.log_file}")

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return ""

    # -- dist, build, server home ------------------------------------------------------------
    def _ensure_build(self, progress: Progress) -> Path:
        cache = CACHE_DIR / "keycloak"
        cache.mkdir(parents=True, exist_ok=True)
        dist = cache / f"keycloak-{VERSION}"
        marker = dist / ".skydd-build"
        want = " ".join(BUILD_OPTIONS)
        with open(cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if marker.exists() and marker.read_text() == want:
                return dist
            zip_path = self._download(cache, progress)
            if not (dist / "bin" / "kc.sh").exists():
                progress("unpacking the dist")
                tmp = cache / f".unpack-{os.getpid()}"
                shutil.rmtree(tmp, ignore_errors=True)
                with zipfile.ZipFile(zip_path) as zf:
                    zf.extractall(tmp)
                for script in (tmp / f"keycloak-{VERSION}" / "bin").glob("*.sh"):
                    script.chmod(0o755)
                shutil.rmtree(dist, ignore_errors=True)
                (tmp / f"keycloak-{VERSION}").rename(dist)
                shutil.rmtree(tmp, ignore_errors=True)
            progress("building the server once (kc.sh build; about 2 minutes, cached)")
            env = {**os.environ, "JAVA_HOME": str(java_home())}
            res = subprocess.run([str(dist / "bin" / "kc.sh"), "build", *BUILD_OPTIONS], env=env,
                                 capture_output=True, text=True, timeout=900)
            if res.returncode != 0:
                raise LabError(f"kc.sh build failed: {(res.stdout + res.stderr)[-800:]}")
            marker.write_text(want)
        return dist

    def _download(self, cache: Path, progress: Progress) -> Path:
        zip_path = cache / f"keycloak-quarkus-dist-{VERSION}.zip"
        sha_path = cache / f"keycloak-quarkus-dist-{VERSION}.zip.sha1"
        try:
            if not sha_path.exists():
                with urllib.request.urlopen(DIST_URL + ".sha1", timeout=60) as r:
                    sha_path.write_text(r.read().decode().split()[0].strip())
            want = sha_path.read_text().strip()
            if zip_path.exists() and _sha1(zip_path) == want:
                return zip_path
            progress(f"downloading {DIST_URL}")
            part = zip_path.with_suffix(".zip.part")
            with urllib.request.urlopen(DIST_URL, timeout=120) as r, open(part, "wb") as out:
                total = int(r.headers.get("Content-Length") or 0)
                done, shown = 0, 0
                while chunk := r.read(1 << 20):
                    out.write(chunk)
                    done += len(chunk)
                    if total and done * 10 // total > shown:
                        shown = done * 10 // total
                        progress(f"downloaded {done >> 20} of {total >> 20} MiB")
        except (OSError, urllib.error.URLError) as err:
            raise LabError(f"cannot download Keycloak from Maven Central: {err}") from err
        if _sha1(part) != want:
            part.unlink(missing_ok=True)
            raise LabError(f"the Keycloak zip does not match its published SHA-1 {want}")
        part.replace(zip_path)
        return zip_path

    def _prepare_home(self, built: Path) -> None:
        home = self.server_home
        home.mkdir(parents=True, exist_ok=True)
        for name in ("lib", "themes", "providers"):
            link = home / name
            if link.is_symlink() and link.resolve() == (built / name).resolve():
                continue
            if link.is_symlink() or link.exists():
                link.unlink() if link.is_symlink() else shutil.rmtree(link)
            link.symlink_to(built / name)
        for name in ("bin", "conf"):
            if not (home / name).exists():
                shutil.copytree(built / name, home / name, symlinks=True)
        (home / "version.txt").write_text((built / "version.txt").read_text())
        imp = home / "data" / "import"
        imp.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REALM_FILE, imp / f"{REALM}-realm.json")

    # -- lab secrets and cards ---------------------------------------------------------------
    def _secret(self, name: str, value: str | None = None) -> str:
        path = self.state_dir / name
        if not path.exists():
            tmp = path.with_name(f".{name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write((value or secrets.token_urlsafe(24)) + "\n")
            tmp.replace(path)
        return path.read_text().strip()

    @property
    def console_otp_dir(self) -> Path:
        return self.state_dir / "console-otp"

    def _console_secrets(self) -> dict[str, str]:
        """The console client's secret and the console users' TOTP secrets, made once per home
        (0600) and handed to the realm import as environment variables. The OTP secrets are kept
        in the ``identity.totp.OtpStore`` format (base32) under ``console-otp/``."""
        from identity.totp import OtpStore, b32_of_raw

        env = {"SKYDD_LAB_CONSOLE_SECRET": self._secret("console-client-secret")}
        store = OtpStore(self.console_otp_dir)
        for username in CONSOLE_USERS:
            raw = self._secret(f"console-otp-{username}", secrets.token_hex(10))
            if store.secret(username) != b32_of_raw(raw):
                store.save(username, b32_of_raw(raw))
            env["SKYDD_LAB_OTP_" + username.upper().replace(".", "_")] = raw
        return env

    def _admin_credentials(self) -> tuple[str, str]:
        return self._secret("admin-username", "skydd-admin"), self._secret("admin-password")

    def _issue_cards(self, pki: Any, at: datetime) -> None:
        from identity.eid import CardIdentity

        realm = json.loads(REALM_FILE.read_text())
        people = {u["username"]: CardIdentity(u["attributes"]["hsaId"][0], u["firstName"], u["lastName"])
                  for u in realm["users"]}
        for username, who in people.items():
            if username not in (PROBE_USER, LOCKOUT_USER):
                pki.issue_card(username, who, at)
        for card, (username, issuer, revoked) in PROBE_CARDS.items():
            files = pki.issue_card(card, people[username], at, foreign=issuer == "foreign")
            if revoked and files.serial not in _revoked_serials(pki):
                pki.revoke(card, at)

    def _as_found_profile(self, progress: Progress) -> None:
        """Declare ``hsaId`` in the user profile as found: visible, but editable by the user."""
        from identity.keycloak_admin import KeycloakAdmin

        admin = KeycloakAdmin.connect(URL, REALM, *self._admin_credentials(),
                                      ca_file=str(self.pki_dir / "ca.pem"))
        profile = admin.user_profile()
        if any(a.get("name") == "hsaId" for a in profile.get("attributes", [])):
            return
        profile.setdefault("attributes", []).append({
            "name": "hsaId", "displayName": "HSA-id", "multivalued": False,
            "permissions": {"view": ["admin", "user"], "edit": ["admin", "user"]}})
        admin.update_user_profile(profile)
        progress("realm socialcare imported as found (password login only)")


def _revoked_serials(pki: Any) -> set[int]:
    path = pki.root / "eid-revoked.json"
    return {int(k) for k in json.loads(path.read_text())} if path.exists() else set()


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
