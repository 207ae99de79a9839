"""The inventory model: municipalities, sites, firewalls, hypervisors, systems, identity provider
and training store. Strict: unknown fields are refused, references between objects are checked.
``estate.loader`` reads it from YAML; secrets are only references (``estate.secrets``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .secrets import FolderUrl, SecretRef

_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Municipality(_Strict):
    id: str = Field(pattern=_ID)
    name: str


class Connection(_Strict):
    """How Skydd reaches a machine: ``ssh`` (the address it connects to, normally the host's
    management address, a private key reference and a known_hosts file pinning the host key) or
    ``local`` (the controller itself). ``timeout`` bounds the connect and each command."""

    type: Literal["ssh", "local"] = "ssh"
    address: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    user: str = "root"
    private_key: SecretRef | None = None  # file:PATH / env:NAME of an OpenSSH private key
    known_hosts: str | None = None  # an OpenSSH known_hosts file pinning the host key
    become: bool = False
    timeout: float = Field(default=10.0, gt=0, le=300)

    @model_validator(mode="after")
    def _complete(self) -> Connection:
        if self.type == "ssh":
            missing = [f for f in ("address", "private_key", "known_hosts") if not getattr(self, f)]
            if missing:
                raise ValueError(f"an ssh connection needs {', '.join(missing)} "
                                 "(host keys are pinned and only key authentication is used)")
        return self


class Segment(_Strict):
    """A network segment of a site: a LAN, the classified segment, the mirror site's net.
    ``connection`` reaches the segment's host (a LAN probe host, the dc or site4 host)."""

    name: str = Field(pattern=_ID)
    network: str  # CIDR, e.g. 10.1.1.0/24
    host: str  # the address of the segment's (probe or service) host
    gateway: str  # the next hop out of the segment
    classified: bool = False
    connection: Connection | None = None


class Site(_Strict):
    id: str = Field(pattern=_ID)
    name: str
    municipality: str | None = None  # None: the joint fourth site
    segments: list[Segment] = []


class Link(_Strict):
    """One side of a firewall: its interface, its address (CIDR form) and the neighbour."""

    interface: str = Field(pattern=r"^[a-zA-Z0-9_.-]{1,15}$")
    address: str  # e.g. 10.1.1.1/24
    peer: str  # the neighbour's address on this link


class Firewall(_Strict):
    id: str = Field(pattern=_ID)
    municipality: str
    site: str
    position: int = Field(ge=1, le=2)  # 1 faces the LAN, 2 faces the core
    ips: bool = False
    fail_mode: Literal["open", "closed"] = "closed"
    management_network: str | None = None
    inside: Link | None = None  # towards the LAN
    outside: Link | None = None  # towards the core
    state_dir: str | None = None  # where the firewall keeps its rule files (IPS config, rules)
    # How Skydd reaches it: ssh, or local when the firewall is this machine. Without one it
    # cannot be audited (its findings are errors) nor hardened (apply refuses the inventory).
    connection: Connection | None = None


class Flow(_Strict):
    """A flow the perimeter must allow; anything else is denied."""

    id: str = Field(pattern=_ID)
    source: str
    destination: str
    protocol: Literal["tcp", "udp"] = "tcp"
    port: int = Field(ge=1, le=65535)


class Hypervisor(_Strict):
    """A vCenter (or a standalone ESXi host) reached over the vSphere API.

    ``datacenters`` maps a datacenter's name to the site it stands in (default: ``site``);
    ``vms`` maps a virtual machine's name to the system it runs, whose classification decides
    which VM controls apply; ``ntp_servers`` are the authoritative time sources;
    ``patch_depot`` is the folder (``https://`` or ``file://``) holding the ESXi offline bundles
    that the patch baseline names.
    """

    id: str = Field(pattern=_ID)
    site: str
    url: str
    username: SecretRef
    password: SecretRef
    ca_file: str | None = None
    unsafe_skip_tls_verify: bool = False
    datacenters: dict[str, str] = {}
    vms: dict[str, str] = {}
    ntp_servers: list[str] = []
    syslog_host: str | None = None
    patch_depot: FolderUrl | None = None


class Database(_Strict):
    """One PostgreSQL cluster of a system: the primary or its mirror.

    ``host`` is the cluster's address on the data network, where the mirror replicates from.
    Skydd's collector connects over TCP to ``address`` (default ``host``) with TLS
    ``verify-full`` against ``ca_file``, as ``user`` (a ``pg_monitor`` role, never a superuser)
    with ``password``. ``connection`` reaches the machine that runs the cluster, where the
    ``pg_mirror`` role works (as the ``postgres`` OS user through its local socket, the way
    Debian's PostgreSQL is administered); ``data_dir`` and ``log_file`` are paths on that
    machine. ``replication_*`` are the primary's side of the replication to the mirror;
    ``tls_cert`` and ``tls_key`` (files on the controller, installed by ``pg_mirror``) are this
    cluster's own server certificate and key.
    """

    host: str
    address: str | None = None
    port: int = Field(default=5432, ge=1, le=65535)
    name: str
    user: str = "skydd"
    password: SecretRef | None = None
    connection: Connection | None = None
    data_dir: str | None = None
    log_file: str | None = None
    replication_user: str = Field(default="replicator", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    replication_password: SecretRef | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    ca_file: str | None = None


class System(_Strict):
    id: str = Field(pattern=_ID)
    name: str
    classification: Literal["open", "internal", "classified"]
    around_the_clock: bool = False
    municipality: str
    primary_site: str
    mirror_site: str
    primary_db: Database | None = None
    mirror_db: Database | None = None
    rpo_seconds: int = Field(default=60, ge=1)
    oidc_client: str | None = None


class LoginProbe(_Strict):
    """The live login probe: a dedicated user with lab cards (``<path>.pem`` + ``<path>.key``)."""

    client_id: str
    redirect_uri: str
    username: str
    lockout_username: str
    password: SecretRef
    card: str
    revoked_card: str
    foreign_card: str
    lockout_card: str
    state_dir: str  # enrolled OTP secrets and the last success token


class IdentityProvider(_Strict):
    id: str = Field(pattern=_ID)
    url: str
    realm: str
    admin_username: SecretRef
    admin_password: SecretRef
    ca_file: str | None = None
    clients: list[str] = []  # application clients that must be confidential with PKCE
    probe: LoginProbe | None = None


class TrainingStore(_Strict):
    url: str = "sqlite:///${SKYDD_HOME}/training.db"


class KeyStore(_Strict):
    """A folder of private keys whose permissions Skydd audits and hardens."""

    id: str = Field(pattern=_ID)
    site: str
    path: str
    owner_uid: int = 0


class Officer(_Strict):
    """A security officer who may request and approve waivers and sign off reports: ``subject`` is
    the SSO ``sub`` claim, ``public_key`` an Ed25519 public key PEM (a path relative to the
    inventory file, or under ``${SKYDD_HOME}``) that verifies what the officer signs at the CLI."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{0,62}$")
    name: str = Field(min_length=1)
    subject: str = Field(min_length=1, max_length=255)
    public_key: str = Field(min_length=1)


class Inventory(_Strict):
    name: str
    municipalities: list[Municipality]
    sites: list[Site]
    firewalls: list[Firewall] = []
    flows: list[Flow] = []
    hypervisors: list[Hypervisor] = []
    systems: list[System] = []
    identity_provider: IdentityProvider | None = None
    training_store: TrainingStore = TrainingStore()
    key_stores: list[KeyStore] = []
    officers: list[Officer] = []  # the roster for four eyes (docs/adr/0011-four-eyes.md)

    @model_validator(mode="after")
    def _references(self) -> Inventory:
        munis = {m.id for m in self.municipalities}
        sites = {s.id for s in self.sites}
        for i, s in enumerate(self.sites):
            if s.municipality is not None and s.municipality not in munis:
                raise InventoryReferenceError(("sites", i, "municipality"), f"unknown municipality {s.municipality!r}")
        for i, f in enumerate(self.firewalls):
            if f.municipality not in munis:
                raise InventoryReferenceError(
                    ("firewalls", i, "municipality"), f"unknown municipality {f.municipality!r}"
                )
            if f.site not in sites:
                raise InventoryReferenceError(("firewalls", i, "site"), f"unknown site {f.site!r}")
        system_ids = {sy.id for sy in self.systems}
        for i, h in enumerate(self.hypervisors):
            if h.site not in sites:
                raise InventoryReferenceError(("hypervisors", i, "site"), f"unknown site {h.site!r}")
            for dc, dc_site in h.datacenters.items():
                if dc_site not in sites:
                    raise InventoryReferenceError(("hypervisors", i, "datacenters", dc), f"unknown site {dc_site!r}")
            for vm, system in h.vms.items():
                if system not in system_ids:
                    raise InventoryReferenceError(("hypervisors", i, "vms", vm), f"unknown system {system!r}")
        for i, k in enumerate(self.key_stores):
            if k.site not in sites:
                raise InventoryReferenceError(("key_stores", i, "site"), f"unknown site {k.site!r}")
        for i, sy in enumerate(self.systems):
            for fld in ("primary_site", "mirror_site"):
                if getattr(sy, fld) not in sites:
                    raise InventoryReferenceError(("systems", i, fld), f"unknown site {getattr(sy, fld)!r}")
            if sy.municipality not in munis:
                raise InventoryReferenceError(
                    ("systems", i, "municipality"), f"unknown municipality {sy.municipality!r}"
                )
            if sy.mirror_db is not None and sy.primary_db is None:
                raise InventoryReferenceError(("systems", i, "mirror_db"), "a mirror needs a primary_db")
        seen: dict[str, int] = {}
        for i, o in enumerate(self.officers):
            for key in (f"id {o.id}", f"subject {o.subject}"):
                if key in seen:
                    raise InventoryReferenceError(("officers", i), f"officer {key} is already officers[{seen[key]}]")
                seen[key] = i
        return self

    def site(self, site_id: str) -> Site:
        return next(s for s in self.sites if s.id == site_id)

    def site_ids(self) -> set[str]:
        return {s.id for s in self.sites}


class InventoryReferenceError(ValueError):
    def __init__(self, loc: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
