"""The Skydd inventory as an Ansible inventory, and the apply plan: groups, host variables,
``--limit``, tags per playbook, namespace interpreter wrappers."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from estate.errors import InputError
from estate.loader import load_inventory
from estate.settings import PLAYBOOKS_DIR
from policies import Control, Level, Remediation, Severity
from policies.model import AppliesTo
from skydd import ansible_inventory as ai
from skydd.applying import ApplyError, ApplyResult, _EventHandler, plan, playbook_path, runner_env
from skydd.auditing import Selection
from skydd.commands.apply import diff_lines
from skydd.lab import LAB_INVENTORY

INVENTORY = """
name: apply-test
municipalities:
  - {id: torsby, name: Torsby}
  - {id: sunne, name: Sunne}
sites:
  - {id: torsby, name: Torsby, municipality: torsby}
  - {id: sunne, name: Sunne, municipality: sunne}
  - {id: site4, name: Fourth site}
firewalls:
  - {id: sunne-fw1, municipality: sunne, site: sunne, position: 1,
     connection: {address: 10.2.9.11, private_key: "file:/etc/skydd/id", known_hosts: /etc/skydd/kh}}
  - {id: sunne-fw2, municipality: sunne, site: sunne, position: 2, connection: {type: local}}
flows:
  - {id: staff-https, source: lan, destination: dc, port: 443}
hypervisors:
  - {id: vcenter, site: torsby, url: "https://127.0.0.1:8989/sdk", username: "env:VC_USER",
     password: "file:/secret/vc-password"}
systems:
  - {id: socialcare, name: Social care, classification: classified, around_the_clock: true,
     municipality: torsby, primary_site: torsby, mirror_site: site4}
identity_provider:
  {id: keycloak, url: "https://localhost:8443", realm: socialcare,
   admin_username: "env:KC_USER", admin_password: "env:KC_PASSWORD"}
key_stores:
  - {id: pki, site: torsby, path: /srv/pki, owner_uid: 1000}
"""


@pytest.fixture
def inv(tmp_path: Path):
    p = tmp_path / "inventory.yaml"
    p.write_text(INVENTORY)
    return load_inventory(p, home=tmp_path / "home")[0]


@pytest.fixture
def built(inv, tmp_path: Path) -> ai.AnsibleInventory:
    return ai.build(inv, run_dir=tmp_path / "run", home=tmp_path / "home")


def test_every_object_is_a_host_in_its_type_site_and_municipality_groups(built) -> None:
    assert built.group("firewalls") == {"sunne-fw1", "sunne-fw2"}
    assert built.group("hypervisors") == {"vcenter"}
    assert built.group("systems") == {"socialcare"}
    assert built.group("key_stores") == {"pki"}
    assert built.group("identity_providers") == {"keycloak"}
    assert built.group("training_stores") == {"training-store"}
    assert built.group("controller") == {"localhost"}
    assert built.group("site_torsby") == {"vcenter", "socialcare", "pki"}
    assert built.group("site_sunne") == {"sunne-fw1", "sunne-fw2"}
    # a system lives at its primary and its mirror site
    assert built.group("site_site4") == {"socialcare"}
    assert built.group("municipality_torsby") == {"vcenter", "socialcare", "pki"}
    assert built.group("municipality_sunne") == {"sunne-fw1", "sunne-fw2"}
    assert "localhost" not in built.group("site_torsby")


def test_hostvars_carry_the_inventory_fields_prefixed_and_secrets_stay_references(built) -> None:
    hosts = built.hosts()
    pki = hosts["pki"]
    assert (pki["skydd_type"], pki["skydd_path"], pki["skydd_owner_uid"], pki["skydd_site"]) == \
        ("key_store", "/srv/pki", 1000, "torsby")
    vc = hosts["vcenter"]
    assert vc["skydd_username"] == "env:VC_USER" and vc["skydd_password"] == "file:/secret/vc-password"
    assert hosts["keycloak"]["skydd_admin_password"] == "env:KC_PASSWORD"
    assert hosts["sunne-fw2"]["skydd_position"] == 2
    assert all(k.startswith(("skydd_", "ansible_")) for hv in hosts.values() for k in hv)
    top = built.data["all"]["vars"]
    assert top["skydd_inventory_name"] == "apply-test"
    assert top["skydd_flows"][0]["port"] == 443


def test_hosts_without_an_ssh_connection_run_locally_with_this_python(built) -> None:
    for name in ("pki", "vcenter", "sunne-fw2", "localhost"):  # sunne-fw2: type local
        hv = built.hosts()[name]
        assert hv["ansible_connection"] == "local"
        assert hv["ansible_python_interpreter"] == sys.executable
    assert built.hosts()["sunne-fw1"]["ansible_connection"] == "ssh"


def test_the_inventory_is_written_0600_into_the_run(built, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    path = ai.write(built, run)
    assert path.is_absolute() and path == run.resolve() / "inventory" / "hosts.json"
    assert json.loads(path.read_text()) == built.data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_firewall_without_a_connection_is_refused_never_run_on_the_controller(inv, tmp_path: Path) -> None:
    fw = inv.firewalls[1].model_copy(update={"connection": None})
    with pytest.raises(InputError, match=r"firewalls\[0\]: firewall 'sunne-fw2' has no connection"):
        ai.build(inv.model_copy(update={"firewalls": [fw]}), run_dir=tmp_path)


def test_an_id_used_twice_is_refused_naming_both(inv, tmp_path: Path) -> None:
    ks = inv.key_stores[0].model_copy(update={"id": "vcenter"})
    with pytest.raises(InputError, match=r"key_stores\[0\].*'vcenter'.*hypervisors\[0\]"):
        ai.build(inv.model_copy(update={"key_stores": [ks]}), run_dir=tmp_path)


def test_limit_is_the_site_group() -> None:
    assert ai.limit_for("torsby") == "site_torsby"
    assert ai.limit_for("fourth-site") == "site_fourth_site"
    assert ai.limit_for(None) is None


def test_ansible_itself_reads_the_inventory_and_the_site_limit(built, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    path = ai.write(built, run)
    tool = Path(sys.executable).parent / "ansible"
    env = {**os.environ, "ANSIBLE_CONFIG": str(tmp_path / "none.cfg"), "ANSIBLE_NOCOLOR": "1"}
    r = subprocess.run([str(tool), "all", "-i", str(path), "--list-hosts", "--limit",
                        ai.limit_for("sunne")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    listed = {ln.strip() for ln in r.stdout.splitlines()[1:] if ln.strip()}
    assert listed == {"sunne-fw1", "sunne-fw2"}
    assert "WARNING" not in r.stderr.replace("[WARNING]: Unable to parse", "")


# -- the plan: which controls run, with which tags ------------------------------------------

def control(cid: str, *, playbook: str | None = "level_d.yml", tags: tuple[str, ...] | None = None,
            disruptive: bool = False) -> Control:
    level = Level(cid[0])
    rem = None if playbook is None else Remediation(playbook, tags or (cid,), disruptive)
    return Control(cid, level, cid, "d", "r", Severity.HIGH, {}, AppliesTo("x.y"), None, rem)


def test_controls_select_exactly_their_tags() -> None:
    chosen = [control("d.key-files-private"), control("d.otp-policy")]
    p = plan(chosen, Selection(controls=("d.key-files-private", "d.otp-policy")))
    assert [(r.playbook, r.tags) for r in p.runs] == \
        [("level_d.yml", ("d.key-files-private", "d.otp-policy"))]


def test_whole_levels_add_the_level_letter_per_playbook() -> None:
    chosen = [control("b.fw-default-deny", playbook="level_b.yml"), control("d.key-files-private")]
    p = plan(chosen, Selection(levels=(Level.B, Level.D)))
    assert {r.playbook: r.tags for r in p.runs} == {
        "level_b.yml": ("b", "b.fw-default-deny"), "level_d.yml": ("d", "d.key-files-private")}


def test_manual_controls_are_listed_and_skipped() -> None:
    chosen = [control("c.physical-room", playbook=None, tags=()), control("c.esxi-ssh-off",
                                                                          playbook="level_c.yml")]
    p = plan(chosen, Selection(levels=(Level.C,)))
    assert [c.id for c in p.manual] == ["c.physical-room"]
    assert [c.id for c in p.controls] == ["c.esxi-ssh-off"]


def test_disruptive_controls_need_the_flag_and_then_keep_the_level_letter_out() -> None:
    chosen = [control("b.ips-inline", playbook="level_b.yml", disruptive=True),
              control("b.fw-logging", playbook="level_b.yml")]
    p = plan(chosen, Selection(levels=(Level.B,)))
    assert [c.id for c in p.disruptive] == ["b.ips-inline"]
    assert p.runs[0].tags == ("b.fw-logging",)  # 'b' would run the disruptive tasks too
    allowed = plan(chosen, Selection(levels=(Level.B,)), allow_disruptive=True)
    assert allowed.runs[0].tags == ("b", "b.fw-logging", "b.ips-inline") and not allowed.disruptive


def test_nothing_to_apply_is_bad_input_saying_why() -> None:
    with pytest.raises(InputError, match=r"manual.*c.physical-room"):
        plan([control("c.physical-room", playbook=None)], Selection())
    with pytest.raises(InputError, match="--allow-disruptive"):
        plan([control("b.ips-inline", playbook="level_b.yml", disruptive=True)], Selection())


def test_playbooks_must_lie_inside_the_playbook_folder() -> None:
    assert playbook_path("level_d.yml").name == "level_d.yml"
    for bad in ("../pyproject.toml", "/etc/passwd", "level_z.yml"):
        with pytest.raises(ApplyError):
            playbook_path(bad)


def test_every_level_playbook_and_site_yml_exist() -> None:
    for name in ("site.yml", *(f"level_{lv.value}.yml" for lv in Level)):
        assert playbook_path(name).is_file()


def test_site_yml_and_every_level_playbook_parse_against_the_lab_inventory(tmp_path: Path) -> None:
    """Every play, role and task file the levels import exists and is valid Ansible."""
    inv, _ = load_inventory(LAB_INVENTORY, home=tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    path = ai.write(ai.build(inv, run_dir=run, home=tmp_path), run)
    env = {**os.environ, **runner_env(run, tmp_path)}
    r = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "--syntax-check",
                        "-i", str(path), "site.yml"], cwd=PLAYBOOKS_DIR, capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Could not match supplied host pattern" not in r.stderr


def test_every_level_playbook_is_a_list_of_named_plays() -> None:
    from ruamel.yaml import YAML

    for lv in Level:
        plays = YAML(typ="safe").load((PLAYBOOKS_DIR / f"level_{lv.value}.yml").read_text())
        assert isinstance(plays, list) and plays
        for play in plays:
            assert play["name"].startswith(f"Level {lv.value} | "), play["name"]
            assert "hosts" in play and "import_playbook" not in play


def test_ansible_runs_with_this_venv_first_on_path_and_an_absolute_home(tmp_path: Path) -> None:
    env = runner_env(tmp_path / "run", tmp_path / "home")
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["SKYDD_HOME"] == str(tmp_path / "home")
    assert env["ANSIBLE_CONFIG"] == str(PLAYBOOKS_DIR / "ansible.cfg")


# -- events and diffs ------------------------------------------------------------------------

def test_failed_and_unreachable_hosts_are_named(tmp_path: Path) -> None:
    result = ApplyResult(plan([control("d.key-files-private")], Selection()), tmp_path, False)
    seen = []
    handler = _EventHandler("level_d.yml", result, seen.append)
    handler({"event": "playbook_on_task_start", "event_data": {"task": "d.x | one"}})
    handler({"event": "runner_on_ok", "event_data": {"host": "pki", "task": "d.x | one",
                                                     "res": {"changed": True}}})
    handler({"event": "runner_on_failed", "event_data": {"host": "pki2", "task": "d.x | one",
                                                         "res": {"msg": "boom"}}})
    handler({"event": "runner_on_failed", "event_data": {"host": "pki3", "task": "d.x | one",
                                                         "ignore_errors": True, "res": {}}})
    handler({"event": "runner_on_unreachable", "event_data": {"host": "fw", "task": "d.x | one",
                                                              "res": {"msg": "no netns"}}})
    assert [e.kind for e in seen] == ["task", "changed", "failed", "ok", "unreachable"]
    assert result.problems == ["pki2: failed at 'd.x | one': boom",
                               "fw: unreachable at 'd.x | one': no netns"]
    assert result.exit_code == 1 and handler.failed_hosts == {"pki2", "fw"}


def test_diffs_of_a_loop_are_shown_per_changed_item(tmp_path: Path) -> None:
    result = ApplyResult(plan([control("d.key-files-private")], Selection()), tmp_path, True)
    seen = []
    res = {"changed": True, "results": [
        {"changed": True, "diff": {"before": {"path": "/k/a", "mode": "0644"},
                                   "after": {"path": "/k/a", "mode": "0600"}}},
        {"changed": False, "diff": {"before": {"path": "/k/b"}, "after": {"path": "/k/b"}}}]}
    _EventHandler("level_d.yml", result, seen.append)(
        {"event": "runner_on_ok", "event_data": {"host": "pki", "task": "t", "res": res}})
    (event,) = seen
    assert [line for d in event.diffs for line in diff_lines(d)] == ["/k/a: mode 0644 -> 0600"]
    text = diff_lines({"before": "a\nb\n", "after": "a\nc\n", "before_header": "f",
                       "after_header": "f"})
    assert "-b" in text and "+c" in text


# -- hosts reached over SSH -------------------------------------------------------------------

SSH_CONN = {"address": "10.2.9.1", "port": 2222, "user": "skydd", "become": True, "timeout": 7.5,
            "private_key": "file:/etc/skydd/id_ed25519", "known_hosts": "/etc/skydd/known hosts"}


def _with_connections(inv, **per_fw):
    from estate.inventory import Connection

    fws = [fw.model_copy(update={"connection": Connection(**per_fw[fw.id]) if fw.id in per_fw
                                 else fw.connection}) for fw in inv.firewalls]
    return inv.model_copy(update={"firewalls": fws})


def test_ssh_hosts_get_the_ssh_connection_with_pinned_keys_and_multiplexing(inv, tmp_path: Path) -> None:
    inv = _with_connections(inv, **{"sunne-fw1": SSH_CONN, "sunne-fw2": {"type": "local"}})
    built = ai.build(inv, run_dir=tmp_path / "run")
    hv = built.hosts()["sunne-fw1"]
    assert {k: hv[k] for k in ("ansible_connection", "ansible_host", "ansible_port", "ansible_user",
                               "ansible_ssh_private_key_file", "ansible_become", "ansible_timeout")} == {
        "ansible_connection": "ssh", "ansible_host": "10.2.9.1", "ansible_port": 2222,
        "ansible_user": "skydd", "ansible_ssh_private_key_file": "/etc/skydd/id_ed25519",
        "ansible_become": True, "ansible_timeout": 7}
    args = hv["ansible_ssh_common_args"].split(" -o ")
    assert "StrictHostKeyChecking=yes" in args[0]
    assert "UserKnownHostsFile='/etc/skydd/known hosts'" in args  # quoted for the shell split
    assert {"GlobalKnownHostsFile=/dev/null", "ControlMaster=auto", "ControlPersist=60s",
            "IdentitiesOnly=yes", "PasswordAuthentication=no"} <= set(args)
    assert hv["ansible_python_interpreter"] == "/usr/bin/python3"  # the host's, not ours
    assert not built.key_files  # a file: key is used where it lies; local is the controller
    local = built.hosts()["sunne-fw2"]
    assert (local["ansible_connection"], local["ansible_python_interpreter"]) == ("local", sys.executable)


def test_an_env_key_is_written_0600_into_the_run_and_removed_after(inv, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FW_KEY", "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n")
    inv = _with_connections(inv, **{"sunne-fw1": {**SSH_CONN, "private_key": "env:FW_KEY"}})
    run = tmp_path / "run"
    run.mkdir()
    built = ai.build(inv, run_dir=run)
    key = Path(built.hosts()["sunne-fw1"]["ansible_ssh_private_key_file"])
    assert key == run.resolve() / "keys" / "sunne-fw1.key" and not key.exists()
    assert "FW_KEY" not in json.dumps(built.data).replace("env:FW_KEY", "")  # only the reference
    ai.write(built, run)
    assert key.read_text().endswith("-----END OPENSSH PRIVATE KEY-----\n")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    ai.remove_key_files(run)
    assert not key.exists() and not key.parent.exists()
    monkeypatch.delenv("FW_KEY")
    with pytest.raises(InputError, match="FW_KEY"):
        ai.write(built, run)


def test_ansible_itself_reads_the_ssh_variables(inv, tmp_path: Path) -> None:
    inv = _with_connections(inv, **{"sunne-fw1": SSH_CONN})
    run = tmp_path / "run"
    run.mkdir()
    path = ai.write(ai.build(inv, run_dir=run), run)
    env = {**os.environ, "ANSIBLE_CONFIG": str(tmp_path / "none.cfg"), "ANSIBLE_NOCOLOR": "1"}
    r = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(path),
                        "--host", "sunne-fw1"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    hv = json.loads(r.stdout)
    assert (hv["ansible_connection"], hv["ansible_host"], hv["ansible_port"]) == ("ssh", "10.2.9.1", 2222)


def test_ansible_cfg_pipelines_ssh() -> None:
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(PLAYBOOKS_DIR / "ansible.cfg")
    assert cfg.getboolean("ssh_connection", "pipelining")
    assert cfg.getint("defaults", "forks") >= 10


def test_database_machines_are_ssh_hosts_the_system_names_for_pg_mirror(inv, tmp_path: Path) -> None:
    from estate.inventory import Connection, Database

    system = inv.systems[0].model_copy(update={
        "primary_db": Database(host="10.0.10.2", name="socialcare", connection=Connection(**SSH_CONN)),
        "mirror_db": Database(host="10.0.40.2", name="socialcare",
                              connection=Connection(**{**SSH_CONN, "address": "10.0.9.40"})),
    })
    built = ai.build(inv.model_copy(update={"systems": [system]}), run_dir=tmp_path / "run")
    hosts = built.hosts()
    assert built.group("databases") == {"socialcare-primary-db", "socialcare-mirror-db"}
    assert (hosts["socialcare"]["skydd_primary_db_server"], hosts["socialcare"]["skydd_mirror_db_server"]) \
        == ("socialcare-primary-db", "socialcare-mirror-db")
    mirror = hosts["socialcare-mirror-db"]
    assert (mirror["ansible_connection"], mirror["ansible_host"]) == ("ssh", "10.0.9.40")
    assert "StrictHostKeyChecking=yes" in mirror["ansible_ssh_common_args"]
    # reached only by delegation: in no site group, so --site limits never select them
    assert not any("socialcare-mirror-db" in built.group(ai.site_group(s.id)) for s in inv.sites)
    # a database without a connection has no machine host, and pg_mirror's preflight says so
    bare = system.model_copy(update={"mirror_db": Database(host="10.0.40.2", name="socialcare")})
    hosts = ai.build(inv.model_copy(update={"systems": [bare]}), run_dir=tmp_path / "run").hosts()
    assert "socialcare-mirror-db" not in hosts and "skydd_mirror_db_server" not in hosts["socialcare"]


def test_a_database_machine_named_like_another_host_is_refused(inv, tmp_path: Path) -> None:
    from estate.inventory import Connection, Database

    system = inv.systems[0].model_copy(update={
        "primary_db": Database(host="10.0.10.2", name="socialcare", connection=Connection(**SSH_CONN))})
    clash = inv.key_stores[0].model_copy(update={"id": "socialcare-primary-db"})
    with pytest.raises(InputError, match="socialcare-primary-db"):
        ai.build(inv.model_copy(update={"systems": [system], "key_stores": [clash]}), run_dir=tmp_path / "run")
