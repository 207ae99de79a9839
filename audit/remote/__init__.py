"""Reaching remote hosts: SSH with pinned host keys, one connection per host, bounded."""

from __future__ import annotations

from .errors import (
    AuthRefused,
    CommandFailed,
    CredentialError,
    HostError,
    HostKeyMismatch,
    Timeout,
    UnknownHostKey,
    Unreachable,
)
from .ssh import (
    CommandResult,
    HostResult,
    Session,
    Target,
    gather_hosts,
    run_on_hosts,
    run_on_hosts_async,
    run_sync,
    session,
)

__all__ = ["AuthRefused", "CommandFailed", "CommandResult", "CredentialError", "HostError",
           "HostKeyMismatch", "HostResult", "Session", "Target", "Timeout", "UnknownHostKey",
           "Unreachable", "gather_hosts", "run_on_hosts", "run_on_hosts_async", "run_sync", "session"]
