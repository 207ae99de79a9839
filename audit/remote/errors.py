"""Why a remote host could not be observed. Every error names the host and the cause, so a
finding can say ``error: sunne-fw1 (10.2.9.1:22): host key mismatch …`` and nothing else."""

from __future__ import annotations

from audit.errors import AuditError


class HostError(AuditError):
    """One host could not be reached or did not answer as expected."""

    reason = "host error"

    def __init__(self, host: str, cause: str) -> None:
        super().__init__(f"{host}: {self.reason}: {cause}")
        self.host = host
        self.cause = cause


class HostKeyMismatch(HostError):
    """The host presented a key that differs from the one pinned in known_hosts."""

    reason = "host key mismatch"

    def __init__(self, host: str, pinned: list[str], presented: str) -> None:
        super().__init__(host, f"known_hosts pins {', '.join(pinned)} but the host presented "
                               f"{presented}; if the host was rebuilt, verify the new key out of "
                               "band and replace its line in known_hosts")
        self.pinned = pinned
        self.presented = presented


class UnknownHostKey(HostError):
    """known_hosts pins no key for the host: Skydd never accepts or adds one itself."""

    reason = "unknown host key"

    def __init__(self, host: str, presented: str, known_hosts: str) -> None:
        super().__init__(host, f"{known_hosts} pins no key for this host (it presented "
                               f"{presented}); add its verified key to known_hosts")
        self.presented = presented


class AuthRefused(HostError):
    """The host refused the private key (key authentication is the only method tried)."""

    reason = "authentication refused"


class CredentialError(HostError):
    """The private key or the known_hosts file could not be read (bad input on the controller)."""

    reason = "credentials unavailable"


class Unreachable(HostError):
    """No SSH connection: refused, no route, reset, closed during the handshake."""

    reason = "unreachable"


class Timeout(HostError):
    """The host did not answer within its own timeout (connect or one command)."""

    reason = "timeout"


class CommandFailed(HostError):
    """A command ran and exited non-zero."""

    reason = "command failed"

    def __init__(self, host: str, command: str, exit_status: int | None, stderr: str) -> None:
        tail = stderr.strip()[-300:] or "(no output on stderr)"
        status = "was killed by a signal" if exit_status is None else f"exited {exit_status}"
        super().__init__(host, f"{command!r} {status}: {tail}")
        self.command = command
        self.exit_status = exit_status
        self.stderr = stderr
