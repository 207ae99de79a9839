"""vSphere: ESXi hosts and virtual machines of one vCenter, read through pyvmomi.

One PropertyCollector pass per vCenter reads every host, VM, folder and datacenter with the
properties the level-c controls need (product and build, advanced options, lockdown mode, VM
``extraConfig``, devices, encryption). The host service list and the NTP configuration live on
per-host managed objects (``HostServiceSystem``, ``HostDateTimeSystem``) that some endpoints do not
implement (plain vcsim answers ``ManagedObjectNotFound``; the lab's skydd-vcsim implements them):
they are read per host, and what cannot be read is left out of the data and named under
``unobservable`` so its controls report ``error``.

Evidence kinds: ``vsphere.host`` (one per host) and ``vsphere.vm`` (one per VM), each with the
site and municipality of its datacenter.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .interface import Collector, CollectorError, Observation

log = logging.getLogger(__name__)

HOST_PROPERTIES = ("name", "parent", "summary.config.product", "config.option", "config.lockdownMode",
                   "configManager.serviceSystem", "configManager.dateTimeSystem")
VM_PROPERTIES = ("name", "parent", "runtime.host", "runtime.powerState", "config.template",
                 "config.extraConfig", "config.migrateEncryption", "config.ftEncryptionMode",
                 "config.hardware.device", "config.keyId", "config.flags.enableLogging")
TREE_PROPERTIES = ("name", "parent")


@dataclass(frozen=True)
class Placement:
    """What the inventory says about where things stand and what they run."""

    vcenter: str
    default_site: str
    sites: Mapping[str, str]  # datacenter name -> site id
    municipalities: Mapping[str, str | None]  # site id -> municipality
    vm_systems: Mapping[str, str]  # VM name -> system id
    classification: Mapping[str, str]  # system id -> classification

    def site_of(self, datacenter: str | None) -> str:
        return self.sites.get(datacenter or "", self.default_site)


def _value(v: Any) -> Any:
    """A plain JSON value for an option value (pyvmomi returns int, long, bool, str …)."""
    if isinstance(v, bool) or v is None or isinstance(v, (str, float)):
        return v
    if isinstance(v, int):
        return int(v)
    return str(v)


def _moid(obj: Any) -> str | None:
    return getattr(obj, "_moId", None) if obj is not None else None


def options_dict(options: Iterable[Any] | None) -> dict[str, Any]:
    return {str(o.key): _value(o.value) for o in (options or [])}


def product_dict(about: Any) -> dict[str, Any]:
    if about is None:
        return {}
    return {"name": about.name, "version": about.version, "build": str(about.build),
            "full_name": about.fullName, "api_version": about.apiVersion}


def device_list(devices: Iterable[Any] | None) -> list[dict[str, Any]]:
    out = []
    for d in devices or []:
        info = getattr(d, "deviceInfo", None)
        conn = getattr(d, "connectable", None)
        out.append({"type": type(d).__name__.rsplit(".", 1)[-1], "key": d.key,
                    "label": getattr(info, "label", None),
                    "connected": bool(conn.connected) if conn is not None else None})
    return out


def host_services(service_system: Any) -> dict[str, dict[str, Any]]:
    """``HostServiceSystem.serviceInfo``: service key → policy and running state."""
    info = service_system.serviceInfo
    return {str(s.key): {"policy": str(s.policy), "running": bool(s.running)}
            for s in (info.service if info is not None else [])}


def host_ntp(date_time_system: Any) -> dict[str, Any]:
    """``HostDateTimeSystem.dateTimeInfo``: the NTP servers the host uses."""
    info = date_time_system.dateTimeInfo
    if info is None or info.ntpConfig is None:
        return {"servers": []}
    return {"servers": [str(s) for s in (info.ntpConfig.server or [])]}


def _read_part(what: str, host_name: str, obj: Any, read: Callable[[Any], Any],
               errors: dict[str, str]) -> Any:
    """Read one per-host part; on failure record why under ``errors[what]`` and return None."""
    if obj is None:
        errors[what] = "the host offers no such managed object"
        return None
    try:
        return read(obj)
    except Exception as err:  # pyvmomi raises vmodl faults and OSErrors alike
        fault = type(err).__name__.rsplit(".", 1)[-1]
        msg = getattr(err, "msg", None) or str(err)
        errors[what] = f"{type(obj).__name__}: {fault}: {msg}".strip()
        log.info("vsphere: %s of %s not observable: %s", what, host_name, errors[what])
        return None


def datacenter_of(moid: str | None, parents: Mapping[str, str | None],
                  datacenters: Mapping[str, str | None]) -> str | None:
    """Walk ``parent`` links up to the first datacenter."""
    seen = set()
    while moid is not None and moid not in seen:
        if moid in datacenters:
            return datacenters[moid]
        seen.add(moid)
        moid = parents.get(moid)
    return None


def shape(objects: Iterable[tuple[str, str, Any, Mapping[str, Any]]], placement: Placement
          ) -> Iterator[Observation]:
    """Turn the PropertyCollector's answer into observations.

    ``objects``: (type name, moid, managed object, property name → value).
    """
    objects = list(objects)
    parents = {moid: _moid(p.get("parent")) for _, moid, _, p in objects}
    datacenters = {moid: p.get("name") for t, moid, _, p in objects if t == "Datacenter"}
    host_names = {moid: p.get("name") for t, moid, _, p in objects if t == "HostSystem"}
    for typ, moid, _obj, props in objects:
        if typ == "HostSystem":
            yield _host(moid, props, placement, datacenter_of(moid, parents, datacenters))
        elif typ == "VirtualMachine" and not props.get("config.template"):
            host = _moid(props.get("runtime.host"))
            dc = datacenter_of(moid, parents, datacenters) or datacenter_of(host, parents, datacenters)
            yield _vm(props, placement, dc, host_names.get(host) if host is not None else None)


def _host(moid: str, props: Mapping[str, Any], placement: Placement, dc: str | None) -> Observation:
    name = props.get("name") or moid
    errors: dict[str, str] = {}
    data: dict[str, Any] = {
        "name": name, "moid": moid, "vcenter": placement.vcenter, "datacenter": dc,
        "product": product_dict(props.get("summary.config.product")),
        "options": options_dict(props.get("config.option")),
    }
    if props.get("config.lockdownMode") is not None:
        data["lockdown_mode"] = str(props["config.lockdownMode"])
    else:
        errors["lockdown_mode"] = "config.lockdownMode is not reported"
    services = _read_part("services", name, props.get("configManager.serviceSystem"), host_services, errors)
    if services is not None:
        data["services"] = services
    ntp = _read_part("ntp", name, props.get("configManager.dateTimeSystem"), host_ntp, errors)
    if ntp is not None:
        data["ntp"] = ntp
    data["unobservable"] = errors
    site = placement.site_of(dc)
    return Observation("vsphere.host", name, data, site=site,
                       municipality=placement.municipalities.get(site))


def _vm(props: Mapping[str, Any], placement: Placement, dc: str | None, host: str | None) -> Observation:
    name = props["name"]
    system = placement.vm_systems.get(name)
    key_id = props.get("config.keyId")
    data: dict[str, Any] = {
        "name": name, "vcenter": placement.vcenter, "datacenter": dc, "host": host,
        "system": system, "classification": placement.classification.get(system or "", "unlisted"),
        "power_state": str(props.get("runtime.powerState")),
        "extra_config": options_dict(props.get("config.extraConfig")),
        "migrate_encryption": props.get("config.migrateEncryption"),
        "ft_encryption_mode": props.get("config.ftEncryptionMode"),
        "logging": props.get("config.flags.enableLogging"),
        "devices": device_list(props.get("config.hardware.device")),
        "encryption": {"key_id": getattr(key_id, "keyId", None) if key_id is not None else None},
    }
    site = placement.site_of(dc)
    return Observation("vsphere.vm", name, data, site=site,
                       municipality=placement.municipalities.get(site))


def retrieve(content: Any) -> list[tuple[str, str, Any, dict[str, Any]]]:
    """One PropertyCollector pass over the inventory tree (paged with ``ContinueRetrieve``)."""
    from pyVmomi import vim, vmodl

    view = content.viewManager.CreateContainerView(
        content.rootFolder, [vim.HostSystem, vim.VirtualMachine, vim.Datacenter, vim.Folder,
                             vim.ComputeResource], True)
    collector: Any = vmodl.query.PropertyCollector  # pyVmomi's spec classes carry no annotations
    try:
        traversal = collector.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
        spec = collector.FilterSpec(
            objectSet=[collector.ObjectSpec(obj=view, skip=True, selectSet=[traversal])],
            propSet=[collector.PropertySpec(type=t, pathSet=list(paths))
                     for t, paths in ((vim.HostSystem, HOST_PROPERTIES),
                                      (vim.VirtualMachine, VM_PROPERTIES),
                                      (vim.Datacenter, TREE_PROPERTIES),
                                      (vim.Folder, TREE_PROPERTIES),
                                      (vim.ComputeResource, TREE_PROPERTIES))])
        pc = content.propertyCollector
        result = pc.RetrievePropertiesEx([spec], collector.RetrieveOptions())
        out = []
        while result is not None:
            for oc in result.objects:
                props = {p.name: p.val for p in (oc.propSet or [])}
                out.append((type(oc.obj).__name__.rsplit(".", 1)[-1], oc.obj._moId, oc.obj, props))
            result = pc.ContinueRetrievePropertiesEx(result.token) if result.token else None
        return out
    finally:
        view.Destroy()


def ssl_context(ca_file: str | None, unsafe_skip_tls_verify: bool) -> ssl.SSLContext:
    """Verification on, with the given CA; the unsafe switch is named and logged."""
    if unsafe_skip_tls_verify:
        log.warning("vsphere: TLS verification is OFF (unsafe_skip_tls_verify)")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if ca_file is not None and not Path(ca_file).is_file():
        raise CollectorError(f"CA file {ca_file} does not exist")
    return ssl.create_default_context(cafile=ca_file)


Connect = Callable[[], Any]


class VSphereCollector(Collector):
    kinds = ("vsphere.host", "vsphere.vm")
    timeout = 90.0

    def __init__(self, source_id: str, connect: Connect, placement: Placement, **kw: Any) -> None:
        super().__init__(source_id, **kw)
        self._connect = connect
        self.placement = placement

    def collect(self) -> Iterable[Observation]:
        from pyVim import connect as pyvim

        disconnect: Any = pyvim.Disconnect  # pyVim's functions carry no annotations
        si = self._connect()
        try:
            content = si.RetrieveContent()
            try:
                objects = retrieve(content)
            except Exception as err:
                raise CollectorError(f"vCenter {self.source_id}: property collection failed: "
                                     f"{getattr(err, 'msg', None) or err}") from err
            observations = list(shape(objects, self.placement))
        finally:
            try:
                disconnect(si)
            except Exception:  # a failed logout must not hide the evidence
                pass
        if not any(o.kind == "vsphere.host" for o in observations):
            raise CollectorError(f"vCenter {self.source_id} reported no ESXi hosts")
        return observations


def connector(url: str, username: str, password: str, ca_file: str | None,
              unsafe_skip_tls_verify: bool) -> Connect:
    """A function that logs in to the vSphere API, raising ``CollectorError`` when it cannot."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise CollectorError(f"vSphere url {url!r} must be https://HOST[:PORT]/sdk")

    def connect() -> Any:
        from pyVim import connect as pyvim
        from pyVmomi import vim

        smart_connect: Any = pyvim.SmartConnect  # pyVim's functions carry no annotations
        ctx = ssl_context(ca_file, unsafe_skip_tls_verify)
        try:
            return smart_connect(host=parts.hostname, port=parts.port or 443, user=username,
                                pwd=password, sslContext=ctx, path=parts.path or "/sdk",
                                connectionPoolTimeout=30)
        except vim.fault.InvalidLogin as err:
            raise CollectorError(f"vSphere {url}: login refused for {username!r}") from err
        except ssl.SSLError as err:
            raise CollectorError(f"vSphere {url}: TLS verification failed: {err.reason}") from err
        except OSError as err:
            raise CollectorError(f"vSphere {url}: unreachable: {err.strerror or err}") from err
        except Exception as err:
            raise CollectorError(f"vSphere {url}: cannot connect: {getattr(err, 'msg', None) or err}") from err

    return connect


class _Deferred(Collector):
    """A collector whose source cannot even be described (an unreadable secret): it reports that."""

    kinds = VSphereCollector.kinds

    def __init__(self, source_id: str, why: str, **kw: Any) -> None:
        super().__init__(source_id, **kw)
        self.why = why

    def collect(self) -> Iterable[Observation]:
        raise CollectorError(self.why)


def from_inventory(inventory: Any, home: Path) -> list[Collector]:
    from estate.errors import InputError
    from estate.secrets import resolve_secret

    munis = {s.id: s.municipality for s in inventory.sites}
    classification = {s.id: s.classification for s in inventory.systems}
    out: list[Collector] = []
    for h in inventory.hypervisors:
        # One vCenter spans datacenters at several sites: each observation carries its own site,
        # so the collector itself is not tied to one (``--site`` filters the evidence).
        kw: dict[str, Any] = {"site": None, "municipality": None}
        placement = Placement(h.id, h.site, dict(h.datacenters), munis, dict(h.vms), classification)
        try:
            user, password = resolve_secret(h.username), resolve_secret(h.password)
            connect = connector(h.url, user, password, h.ca_file, h.unsafe_skip_tls_verify)
        except (InputError, CollectorError) as err:
            out.append(_Deferred(h.id, str(err), **kw))
            continue
        out.append(VSphereCollector(h.id, connect, placement, **kw))
    return out
