"""``skydd console``: the officers' console (docs/adr/0012-console.md) on uvicorn, one process
(sessions live in its memory)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from estate.errors import InputError
from estate.settings import Settings

from ..output import err
from . import InventoryOpt

if TYPE_CHECKING:
    from ..web.console.app import ConsoleConfig

DEFAULT_PORT = 8700
DEFAULT_CLIENT = "skydd-console"
SECRET_ENV = "SKYDD_CONSOLE_CLIENT_SECRET"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_config(settings: Settings, inventory: Path | None, *, client_id: str, client_secret: str | None,
                 public_url: str, idle_minutes: int, absolute_hours: int) -> ConsoleConfig:
    """The console's configuration; ``InputError`` (exit 2) for anything missing or wrong."""
    from estate.loader import load_inventory
    from estate.secrets import resolve_secret
    from identity.errors import IdentityConfigError
    from identity.settings import load_settings
    from identity.tokens import Verifier, issuer_of

    from ..officers import load_roster
    from ..web.console.app import ConsoleConfig
    from ..web.console.oidc import Provider

    path = settings.inventory(inventory)
    inv, _ = load_inventory(path, home=settings.home)
    idp = inv.identity_provider
    if idp is None:
        raise InputError(f"{path}: the inventory names no identity_provider; the console signs "
                         "officers in there")
    ref = client_secret or (f"env:{SECRET_ENV}" if SECRET_ENV in os.environ else None)
    if ref is None:
        raise InputError(f"give the console client's secret: --client-secret file:PATH or env:NAME "
                         f"(or set ${SECRET_ENV})")
    if not ref.startswith(("file:", "env:")):
        raise InputError("--client-secret must be file:PATH or env:NAME, never the secret itself")
    secret = resolve_secret(ref)
    ident = load_settings(settings.home)
    try:
        verifier = Verifier.from_inventory(inv, ident.model_copy(update={"client_id": client_id}))
    except IdentityConfigError as e:
        raise InputError(str(e)) from e
    if not public_url.startswith(("https://", "http://localhost:", "http://127.0.0.1:")):
        raise InputError(f"--public-url {public_url!r}: https, or http on localhost only")
    issuer = issuer_of(idp.url, idp.realm)
    provider = Provider(issuer=issuer, client_id=client_id, client_secret=secret,
                        redirect_uri=public_url.rstrip("/") + "/auth/callback",
                        ca_file=str(idp.ca_file) if idp.ca_file else None, verifier=verifier,
                        acr=ident.required_acr)
    return ConsoleConfig(settings=settings, provider=provider, public_url=public_url.rstrip("/"),
                         roster=load_roster(inv, path, strict=False), inventory_name=path.name,
                         inventory_path=path, required_acr=ident.required_acr,
                         required_amr=tuple(ident.required_amr), idle_seconds=idle_minutes * 60,
                         absolute_seconds=absolute_hours * 3600)


def console(
    inventory: InventoryOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on (without TLS: loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = DEFAULT_PORT,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="Server certificate (PEM) for https.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Its private key (PEM).")] = None,
    public_url: Annotated[str | None, typer.Option(
        help="The address browsers use; its /auth/callback must be the client's redirect URI "
             "(default: https://localhost:PORT with TLS, else http://localhost:PORT).")] = None,
    client_id: Annotated[str, typer.Option(help="The console's OIDC client.")] = DEFAULT_CLIENT,
    client_secret: Annotated[str | None, typer.Option(
        help=f"The client's secret as file:PATH or env:NAME (default: env:{SECRET_ENV}).")] = None,
    idle_minutes: Annotated[int, typer.Option(help="Session idle timeout.", min=1, max=240)] = 15,
    absolute_hours: Annotated[int, typer.Option(help="Session absolute lifetime.", min=1, max=24)] = 8,
) -> None:
    """Serve the officers' console: card + OTP sign-in for security officers; matrix, waivers,
    report sign-off and the audit log's verification."""
    import uvicorn

    from ..web.console.app import create_console

    if (tls_cert is None) != (tls_key is None):
        raise InputError("give both --tls-cert and --tls-key, or neither")
    for f in (tls_cert, tls_key):
        if f is not None and not f.is_file():
            raise InputError(f"{f}: no such file")
    if tls_cert is None and not _loopback(host):
        raise InputError(f"--host {host}: without --tls-cert the console listens on loopback only")
    scheme = "https" if tls_cert else "http"
    url = public_url or f"{scheme}://localhost:{port}"
    settings = Settings.from_env()
    config = build_config(settings, inventory, client_id=client_id, client_secret=client_secret,
                          public_url=url, idle_minutes=idle_minutes, absolute_hours=absolute_hours)
    app = create_console(config)
    err.print(f"skydd: the officers' console at {config.public_url}/ (sign in with the e-ID card "
              f"and a one-time code at {config.provider.issuer})")
    uvicorn.run(app, host=host, port=port, workers=1, log_level="warning", access_log=False,
                server_header=False, proxy_headers=False,
                ssl_certfile=str(tls_cert) if tls_cert else None,
                ssl_keyfile=str(tls_key) if tls_key else None)


def register(app: typer.Typer) -> None:
    app.command("console")(console)
