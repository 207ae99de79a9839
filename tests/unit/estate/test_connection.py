"""How Skydd reaches a machine: ``connection`` on firewalls and segment hosts, strict for ssh."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from estate.errors import InputError
from estate.inventory import Connection, Firewall, Segment
from estate.loader import load_inventory

SSH = {"address": "10.9.0.2", "private_key": "file:/k/id_ed25519", "known_hosts": "/k/known_hosts"}

INVENTORY = """
name: connection-test
municipalities: [{id: sunne, name: Sunne}]
sites:
  - id: sunne
    name: Sunne
    municipality: sunne
    segments:
      - name: lan
        network: 10.2.1.0/24
        host: 10.2.1.10
        gateway: 10.2.1.1
        connection: {address: 10.2.9.10, private_key: "file:${SKYDD_HOME}/lab/ssh/id_ed25519",
                     known_hosts: "${SKYDD_HOME}/lab/ssh/known_hosts"}
firewalls:
  - id: sunne-fw1
    municipality: sunne
    site: sunne
    position: 1
    connection: CONN
"""


def test_ssh_is_the_default_type_with_port_22_root_and_ten_seconds() -> None:
    c = Connection(**SSH)
    assert (c.type, c.port, c.user, c.become, c.timeout) == ("ssh", 22, "root", False, 10.0)


@pytest.mark.parametrize("missing", ["address", "private_key", "known_hosts"])
def test_ssh_needs_address_key_and_pinned_host_keys(missing: str) -> None:
    with pytest.raises(ValidationError, match=f"ssh connection needs {missing}"):
        Connection(**{k: v for k, v in SSH.items() if k != missing})


def test_local_needs_nothing_and_a_private_key_must_be_a_reference() -> None:
    assert Connection(type="local").address is None
    with pytest.raises(ValidationError, match="reference"):
        Connection(**{**SSH, "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----"})


@pytest.mark.parametrize("field,value", [("port", 0), ("port", 65536), ("timeout", 0),
                                         ("timeout", 301), ("type", "telnet"), ("password", "x")])
def test_out_of_range_or_unknown_fields_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Connection(**{**SSH, field: value})


def test_firewalls_and_segments_carry_an_optional_connection() -> None:
    fw = Firewall(id="fw", municipality="m", site="s", position=1, connection=SSH)
    assert fw.connection == Connection(**SSH)
    assert Firewall(id="fw", municipality="m", site="s", position=1).connection is None
    seg = Segment(name="lan", network="10.0.0.0/24", host="10.0.0.2", gateway="10.0.0.1",
                  connection={"type": "local"})
    assert seg.connection.type == "local"


def test_the_loader_expands_home_in_connections(tmp_path: Path) -> None:
    p = tmp_path / "inv.yaml"
    p.write_text(INVENTORY.replace("CONN", "{address: 10.2.9.1, private_key: 'env:FW_KEY', "
                                           "known_hosts: /etc/skydd/known_hosts, port: 2222}"))
    inv, _ = load_inventory(p, home=tmp_path)
    conn = inv.sites[0].segments[0].connection
    assert conn.private_key == f"file:{tmp_path}/lab/ssh/id_ed25519"
    assert conn.known_hosts == f"{tmp_path}/lab/ssh/known_hosts"
    assert inv.firewalls[0].connection.port == 2222


def test_the_loader_names_the_field_of_an_incomplete_connection(tmp_path: Path) -> None:
    p = tmp_path / "inv.yaml"
    p.write_text(INVENTORY.replace("CONN", "{address: 10.2.9.1, private_key: 'env:FW_KEY'}"))
    with pytest.raises(InputError) as info:
        load_inventory(p, home=tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"{p}:") and "firewalls.0.connection" in msg and "known_hosts" in msg
