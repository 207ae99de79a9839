"""Commands and files of remote hosts over SSH (asyncssh; docs/adr/0009-ssh-transport.md).

One event loop holds one connection per host; every command and file read of that host goes
over it as its own channel. ``gather_hosts`` runs many hosts at once, at most ``limit`` of them
connected at a time, and bounds each host by its own time: the connect (key exchange and
authentication included) and every command wait at most ``connection.timeout`` seconds, and the
whole host at most ``budget`` seconds. A host that fails becomes that host's ``HostError``; the
other hosts are unaffected.

Host keys are strict: the key the host presents must be one that the connection's known_hosts
file pins for its address. Skydd never accepts or adds a key; an unknown key and a changed key
are different errors naming the fingerprints. Only public key authentication with the key the
connection references (``file:``/``env:``) is tried: no password, keyboard-interactive, GSS,
agent or ``~/.ssh/config``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncssh

from estate.errors import InputError
from estate.inventory import Connection
from estate.secrets import resolve_secret

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

T = TypeVar("T")
DEFAULT_LIMIT = 16
Command = str | Sequence[str]


@dataclass(frozen=True)
class Target:
    """A host to reach: its name in the inventory and its ssh connection."""

    name: str
    connection: Connection

    def __post_init__(self) -> None:
        if self.connection.type != "ssh":
            raise ValueError(f"{self.name}: not an ssh connection")

    @property
    def label(self) -> str:
        """``name (address:port)``: how errors name the host."""
        return f"{self.name} ({self.connection.address}:{self.connection.port})"


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_status: int | None
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


@dataclass(frozen=True)
class HostResult:
    """What ``run_on_hosts`` saw of one host: each command's result, each file (None: absent)."""

    host: str
    commands: tuple[CommandResult, ...]
    files: Mapping[str, bytes | None] = field(default_factory=dict)


def fingerprint(key: Any) -> str:
    return f"{key.get_algorithm()} {key.get_fingerprint('sha256')}"


class _PinningClient(asyncssh.SSHClient):
    """Remembers the key a host presented when known_hosts did not trust it, and refuses it."""

    def __init__(self) -> None:
        self.presented: Any = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
        self.presented = key
        return False


class Session:
    """One open connection to one host. Commands run one after another, each bounded."""

    def __init__(self, target: Target, conn: asyncssh.SSHClientConnection) -> None:
        self.target = target
        self._conn = conn
        c = target.connection
        self._sudo = c.become and c.user != "root"
        self.timeout = c.timeout

    @property
    def name(self) -> str:
        return self.target.name

    async def run(self, command: Command, *, check: bool = True,
                  timeout: float | None = None) -> CommandResult:
        """Run ``command`` (a shell string or an argument list); ``check``: non-zero exit is
        ``CommandFailed``."""
        line = command if isinstance(command, str) else shlex.join(command)
        remote = f"sudo -n -- sh -c {shlex.quote(line)}" if self._sudo else line
        limit = timeout or self.timeout
        try:
            done = await asyncio.wait_for(
                self._conn.run(remote, check=False, encoding=None, stdin=asyncssh.DEVNULL), limit)
        except TimeoutError as err:
            raise Timeout(self.target.label, f"{line!r}: no answer within {limit:g} s") from err
        except (asyncssh.Error, OSError) as err:
            raise Unreachable(self.target.label, f"{line!r}: connection lost: {err}") from err
        out = CommandResult(line, done.exit_status, _bytes(done.stdout), _bytes(done.stderr))
        if check and out.exit_status != 0:
            raise CommandFailed(self.target.label, line, out.exit_status,
                                out.stderr.decode("utf-8", "replace"))
        return out

    async def run_many(self, commands: Sequence[Command], *, check: bool = True
                       ) -> list[CommandResult]:
        """Run several commands in one remote shell (one channel: each exec costs the host a
        fork and a login record), each result byte-exact; bounded by the timeout per command."""
        lines = [c if isinstance(c, str) else shlex.join(c) for c in commands]
        if len(lines) < 2:
            return [await self.run(c, check=check) for c in lines]
        script = ['d=$(mktemp -d) || exit 97', 'trap \'rm -rf "$d"\' EXIT']
        for line in lines:
            script.append(f'( {line}\n) >"$d/o" 2>"$d/e" </dev/null; echo $?; '
                          'base64 -w0 "$d/o"; echo; base64 -w0 "$d/e"; echo')
        raw = await self.run("\n".join(script), check=True, timeout=self.timeout * len(lines))
        rows = raw.stdout.decode("ascii", "replace").split("\n")
        if len(rows) < 3 * len(lines):
            raise CommandFailed(self.target.label, "; ".join(lines), raw.exit_status,
                                "the shell's framed output was cut short")
        out = []
        for i, line in enumerate(lines):
            status, o, e = rows[3 * i: 3 * i + 3]
            result = CommandResult(line, int(status), base64.b64decode(o), base64.b64decode(e))
            if check and result.exit_status != 0:
                raise CommandFailed(self.target.label, line, result.exit_status,
                                    result.stderr.decode("utf-8", "replace"))
            out.append(result)
        return out

    async def read(self, path: str, *, tail: int | None = None) -> bytes | None:
        """A file's bytes (the last ``tail`` bytes when given); None when it does not exist."""
        q = shlex.quote(path)
        body = f"tail -c {int(tail)} -- {q}" if tail else f"cat -- {q}"
        r = await self.run(f"if [ -e {q} ]; then {body}; else exit 3; fi", check=False)
        if r.exit_status == 3 and not r.stdout:
            return None
        if r.exit_status != 0:
            raise CommandFailed(self.target.label, f"read {path}", r.exit_status,
                                r.stderr.decode("utf-8", "replace"))
        return r.stdout

    async def mtime(self, path: str) -> float | None:
        r = await self.run(["stat", "-c", "%Y", path], check=False)
        return float(r.text.strip()) if r.exit_status == 0 and r.text.strip() else None


def _bytes(value: Any) -> bytes:
    if value is None:
        return b""
    return value if isinstance(value, bytes) else str(value).encode()


def _credentials(target: Target) -> tuple[Any, Any]:
    c = target.connection
    assert c.private_key is not None and c.known_hosts is not None  # the model's validator
    try:
        key = asyncssh.import_private_key(resolve_secret(c.private_key) + "\n")
    except InputError as err:
        raise CredentialError(target.label, str(err)) from err
    except (asyncssh.KeyImportError, ValueError) as err:
        raise CredentialError(target.label, f"{c.private_key} is not an unencrypted OpenSSH "
                                            f"private key: {err}") from err
    try:
        known = asyncssh.read_known_hosts(c.known_hosts)
    except (OSError, ValueError) as err:
        raise CredentialError(target.label, f"cannot read known_hosts {c.known_hosts}: {err}") from err
    return key, known


@contextlib.asynccontextmanager
async def session(target: Target) -> AsyncIterator[Session]:
    """Connect to ``target`` (bounded by its timeout) and close the connection afterwards."""
    c = target.connection
    key, known = _credentials(target)
    client = _PinningClient()
    try:
        conn, _ = await asyncio.wait_for(asyncssh.create_connection(
            lambda: client, c.address, c.port, username=c.user, client_keys=[key],
            known_hosts=known, config=None, agent_path=None, password=None,
            preferred_auth="publickey", password_auth=False, kbdint_auth=False,
            gss_auth=False, host_based_auth=False, connect_timeout=c.timeout,
            login_timeout=c.timeout, keepalive_interval=max(c.timeout, 15)), c.timeout)
    except TimeoutError as err:
        raise Timeout(target.label, f"no SSH handshake within {c.timeout:g} s") from err
    except asyncssh.HostKeyNotVerifiable as err:
        raise _host_key_error(target, known, client.presented) from err
    except asyncssh.PermissionDenied as err:
        raise AuthRefused(target.label, f"user {c.user} with the key {c.private_key}: "
                                        f"{err.reason or 'permission denied'}") from err
    except asyncssh.Error as err:
        raise Unreachable(target.label, f"SSH failed: {err.reason or type(err).__name__}") from err
    except OSError as err:
        why = os.strerror(err.errno) if err.errno else str(err)  # asyncio leaves strerror empty
        raise Unreachable(target.label, f"{why} (TCP connect to port {c.port})") from err
    try:
        yield Session(target, conn)
    finally:
        conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.wait_closed(), 2)


def _host_key_error(target: Target, known: Any, presented: Any) -> HostError:
    c = target.connection
    address = str(c.address)
    pinned = asyncssh.match_known_hosts(known, address, address, c.port)[0]
    shown = fingerprint(presented) if presented is not None else "a key it could not decode"
    if pinned:
        # The address is matched as host name and as IP, so one line can come back twice.
        fingerprints = list(dict.fromkeys(fingerprint(k) for k in pinned))
        return HostKeyMismatch(target.label, fingerprints, shown)
    return UnknownHostKey(target.label, shown, str(c.known_hosts))


Hold = Callable[[Target], contextlib.AbstractAsyncContextManager[Any]]
Budget = float | Callable[[Target], float] | None


async def gather_hosts(targets: Sequence[Target], work: Callable[[Session], Awaitable[T]], *,
                       limit: int = DEFAULT_LIMIT, budget: Budget = None,
                       hold: Hold | None = None) -> dict[str, T | HostError]:
    """``work`` on each host over one connection, ``limit`` hosts at a time.

    ``budget`` bounds one host's connect and work together, in seconds or per target (default:
    six times its timeout). ``hold`` (optional) is entered before the host's budget starts,
    e.g. a lock the host must hold while it is observed. Results and errors are keyed by target
    name."""
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError("target names must be unique")
    gate = asyncio.Semaphore(max(1, limit))

    async def one(t: Target) -> T | HostError:
        async def connected() -> T:
            async with session(t) as s:
                return await work(s)

        bound = (budget(t) if callable(budget) else budget) or t.connection.timeout * 6
        try:
            async with contextlib.AsyncExitStack() as stack:
                if hold is not None:
                    await stack.enter_async_context(hold(t))
                async with gate:
                    return await asyncio.wait_for(connected(), bound)
        except HostError as err:
            return err
        except TimeoutError:
            return Timeout(t.label, f"not done within {bound:g} s")

    done = await asyncio.gather(*(one(t) for t in targets))
    return dict(zip(names, done, strict=True))


async def run_on_hosts_async(targets: Sequence[Target], commands: Sequence[Command], *,
                             files: Sequence[str] = (), check: bool = True,
                             limit: int = DEFAULT_LIMIT) -> dict[str, HostResult | HostError]:
    async def work(s: Session) -> HostResult:
        results = await s.run_many(commands, check=check)
        read = {f: await s.read(f) for f in files}
        return HostResult(s.name, tuple(results), read)

    steps = len(commands) + len(files) + 1  # the connect, each command, each file
    return await gather_hosts(targets, work, limit=limit,
                              budget=lambda t: t.connection.timeout * steps)


def run_on_hosts(targets: Sequence[Target], commands: Sequence[Command], *,
                 files: Sequence[str] = (), check: bool = True,
                 limit: int = DEFAULT_LIMIT) -> dict[str, HostResult | HostError]:
    """Run ``commands`` and read ``files`` on every host, one connection each, ``limit`` hosts
    at a time; each host's value is its ``HostResult`` or the ``HostError`` that stopped it."""
    return run_sync(run_on_hosts_async(targets, commands, files=files, check=check, limit=limit))


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to the end from synchronous code, also when this thread already runs an event
    loop (a web handler, a test harness): then on a thread of its own, never failing for that."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
