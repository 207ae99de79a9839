"""``skydd log verify`` and ``skydd log seal``: the audit log's chain, checkpoints and anchors.

``verify --anchor report.json`` proves that the log still holds the state a signed report
recorded (its ``log`` object: line count and head hash), so cutting entries off the end shows.
When a history store outside ``$SKYDD_HOME`` is configured (``SKYDD_HISTORY_URL``), ``verify``
also proves the log still holds the witness's latest checkpoint (``--witness`` requires it,
``--no-witness`` skips it); a log deleted after the witness recorded it is broken, not missing.
``witness`` shows what the witness holds; ``witness --reset`` starts it over for a log restored
behind it (signed with the log's key, named by every later ``verify``).
``seal --accept-unsigned`` is the operator's explicit way to sign over entries no checkpoint
covers (left by a crashed writer), recording who accepted them and why (ADR 0008).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.errors import VerificationError
from audit.history import History, HistoryError
from audit.log import LogAnchor, LogReport, Witnessed, accept_unsigned, append, verify_log, witness_url
from audit.log.witness import WitnessError, latest, reset, resets
from audit.signing import KEY_NAME, load_home_public_key, load_public_key, load_signer
from estate.canonical import rfc3339
from estate.errors import InputError
from estate.settings import Settings

from ..output import actor, err, out

_LOG_HELP = "The log (default: $SKYDD_HOME/audit.log)."
_KEY_HELP = "PEM public key you trust (default: the $SKYDD_HOME/keys key)."
_ANCHOR_HELP = "A signed report (report.json) whose 'log' state the log must still contain; repeatable."
_WITNESS_HELP = ("Prove the log still holds the witness's latest checkpoint (the history store "
                 "outside $SKYDD_HOME); default: when one is configured.")
_RESET_HELP = ("Start the witness over for this log, restored from a backup behind what the "
               "witness held (signed with the log's key, kept for ever).")
_ACCEPT_HELP = "Sign over the entries after the last checkpoint, after you reviewed them."


def verify(
    log: Annotated[Path | None, typer.Option("--log", help=_LOG_HELP)] = None,
    public_key: Annotated[Path | None, typer.Option("--public-key", help=_KEY_HELP)] = None,
    anchor: Annotated[list[Path] | None, typer.Option("--anchor", help=_ANCHOR_HELP)] = None,
    fmt: Annotated[str, typer.Option("--format", help="text or json")] = "text",
    witness: Annotated[bool | None, typer.Option("--witness/--no-witness", help=_WITNESS_HELP)] = None,
) -> None:
    """Check the chain, every checkpoint, each anchor and the witness. Exit 0 intact, 1 broken
    (rolled back or forked against an anchor or the witness), 2 bad input."""
    if fmt not in ("text", "json"):
        raise InputError(f"--format {fmt!r}: use text or json")
    settings = Settings.from_env()
    path = log or settings.audit_log
    key = _trusted_key(public_key, settings)
    anchors = [read_anchor(p) for p in anchor or ()]
    held = _witnessed(settings, key, witness)
    if not path.is_file():
        if held is not None and not path.exists():
            err.print(f"broken: {path}: the log is gone, but the witness holds its checkpoint "
                      f"{held.describe()}: it was deleted (rollback)")
            raise typer.Exit(1)
        raise InputError(f"--log {path}: no such file" if log else f"no audit log at {path} (nothing logged yet?)")
    try:
        with err.status("verifying the audit log…") as status:
            def progress(done: int, total: int) -> None:
                status.update(f"verifying the audit log… {done * 100 // max(total, 1)} %")
            report = verify_log(path, key, anchors=[*anchors, *([held.anchor] if held else [])],
                                progress=progress)
    except OSError as e:
        raise InputError(f"--log {path}: {e.strerror}") from e
    if fmt == "json":
        print(json.dumps({**_as_dict(report), "witness": _witness_dict(held, report)}, indent=2))
    elif report.problem is None:
        _print_intact(report, list(zip(anchor or [], anchors, strict=True)), held)
    if report.problem is not None:
        err.print(f"broken: {path}: {report.problem.message}")
        if held is not None:
            err.print(f"witness: holds checkpoint {held.describe()}, recorded "
                      f"{rfc3339(held.recorded_at)}; the log must still contain it")
        raise typer.Exit(1)


def _witnessed(settings: Settings, key: Ed25519PublicKey, wanted: bool | None) -> Witnessed | None:
    """The witness's latest checkpoint of this log; None when it holds none, is not configured
    or not wanted. ``--witness`` makes a missing or unreachable witness bad input (exit 2);
    without it an unreachable witness is a warning, never silent."""
    if wanted is False:
        return None
    url, why = witness_url(settings.home)
    if url is None:
        if wanted:
            raise InputError(f"--witness: {why}")
        return None
    try:
        with History(url) as history:
            done = resets(history, key)
            held = latest(history, key)
    except (HistoryError, WitnessError) as e:
        if wanted:
            raise InputError(f"--witness: {e}") from e
        err.print(f"warning: the witness was not checked: {e}")
        return None
    if done:  # never silent: a reset accepted a log that was behind the witness
        err.print(f"note: the witness was reset {len(done)} time(s); the last: {done[-1].describe()}")
    if held is None:
        err.print("note: the witness holds no checkpoint of this log yet")
    return held


def seal(
    accept_unsigned_: Annotated[bool, typer.Option("--accept-unsigned", help=_ACCEPT_HELP)] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why they are accepted (recorded).")] = None,
    by: Annotated[str | None, typer.Option("--actor", help="Who accepts (default: $SKYDD_ACTOR/$USER).")] = None,
    log: Annotated[Path | None, typer.Option("--log", help=_LOG_HELP)] = None,
) -> None:
    """Accept entries no signed checkpoint covers (a crashed writer's): needs the signing key."""
    if not accept_unsigned_:
        raise InputError("seal only signs over unsigned entries: review them ('skydd log verify'), "
                         "then pass --accept-unsigned and --reason")
    if not reason or not reason.strip():
        raise InputError("--reason: say why the unsigned entries are accepted (it is recorded)")
    settings = Settings.from_env()
    path = log or settings.audit_log
    if not path.is_file():
        raise InputError(f"--log {path}: no such file" if log else f"no audit log at {path}")
    if not (settings.keys / KEY_NAME).is_file():  # never make a key to sign over a log
        raise InputError(f"no signing key in {settings.keys}: sealing needs the key that signs the log")
    who = by or actor()
    entry = accept_unsigned(path, load_signer(settings.home), who, reason.strip(),
                            warn=lambda m: err.print(f"warning: {m}"))
    if entry is None:
        out.print(f"nothing to accept: {path} ends in a signed checkpoint")
        return
    d = entry["data"]
    out.print(f"accepted seq {d['from_seq']}–{d['to_seq']} as seq {entry['seq']} by {who}; "
              "the log is signed again")


def witness(
    reset_: Annotated[bool, typer.Option("--reset", help=_RESET_HELP)] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (signed, shown by every verify).")] = None,
    by: Annotated[str | None, typer.Option("--actor", help="Who resets (default: $SKYDD_ACTOR/$USER).")] = None,
    log: Annotated[Path | None, typer.Option("--log", help=_LOG_HELP)] = None,
) -> None:
    """What the witness holds of this log and its resets; ``--reset`` starts it over for a log
    restored from a backup behind it (needs the signing key and an intact log)."""
    settings = Settings.from_env()
    path = log or settings.audit_log
    url, why = witness_url(settings.home)
    if url is None:
        raise InputError(f"no witness: {why}")
    if reset_:
        _reset_witness(settings, path, url, reason, by or actor())
        return
    key = _trusted_key(None, settings)
    try:
        with History(url) as history:
            done, held = resets(history, key), latest(history, key)
    except (HistoryError, WitnessError) as e:
        err.print(f"witness {url}: {e}")
        raise typer.Exit(1) from e
    out.print(f"witness {url}: " + (f"holds checkpoint {held.describe()}, recorded "
                                    f"{rfc3339(held.recorded_at)}" if held else
                                    "holds no checkpoint of this log yet"))
    for r in done:
        out.print(r.describe())


def _reset_witness(settings: Settings, path: Path, url: str, reason: str | None, who: str) -> None:
    if not reason or not reason.strip():
        raise InputError("--reason: say why the witness starts over (it is signed and shown by "
                         "every 'skydd log verify')")
    if not (settings.keys / KEY_NAME).is_file():  # never make a key to vouch for a log
        raise InputError(f"no signing key in {settings.keys}: a reset needs the key that signs the log")
    if not path.is_file():
        raise InputError(f"--log {path}: no such file: restore the log before resetting the witness")
    signer = load_signer(settings.home)
    try:
        report = verify_log(path, signer.public_key)
    except OSError as e:
        raise InputError(f"--log {path}: {e.strerror}") from e
    if report.problem is not None:
        err.print(f"refused: {path} is not intact on its own ({report.problem.message}); "
                  "the witness is only reset for a genuine log restored behind it")
        raise typer.Exit(1)
    try:
        with History(url) as history:
            done = reset(path, signer, history, who, reason.strip())
    except (HistoryError, WitnessError) as e:
        err.print(f"not reset: {e}")
        raise typer.Exit(1) from e
    append(path, signer, "witness.reset", who,
           {"epoch": done.epoch, "from_size": done.from_size, "from_head": done.from_head,
            "reason": done.reason}, warn=lambda m: err.print(f"warning: {m}"))
    out.print(f"witness {done.describe()}; it now witnesses the log from its start again")


def read_anchor(report: Path) -> LogAnchor:
    """The ``log`` anchor of a signed report; ``InputError`` (exit 2) when it has none.

    Reads only that object: checking the report's own signature is ``skydd report verify``'s job.
    """
    try:
        data = json.loads(report.read_bytes())
    except OSError as e:
        raise InputError(f"--anchor {report}: {e.strerror}") from e
    except ValueError as e:
        raise InputError(f"--anchor {report}: not JSON ({e})") from e
    if not isinstance(data, dict) or "log" not in data:
        raise InputError(f"--anchor {report}: the report holds no 'log' anchor (made before "
                         "reports embedded the log's checkpoint, or not a Skydd report)")
    try:
        return LogAnchor.from_dict(data["log"])
    except ValueError as e:
        raise InputError(f"--anchor {report}: {e}") from e


def _trusted_key(public_key: Path | None, settings: Settings) -> Ed25519PublicKey:
    if public_key is not None:
        try:
            return load_public_key(public_key.read_bytes())
        except OSError as e:
            raise InputError(f"--public-key {public_key}: {e.strerror}") from e
        except VerificationError as e:
            raise InputError(f"--public-key {public_key}: {e}") from e
    try:
        return load_home_public_key(settings.home)
    except FileNotFoundError as e:
        raise InputError(f"no signing key in {settings.keys}; pass --public-key PEM") from e
    except (OSError, ValueError, VerificationError) as e:
        raise InputError(f"the signing key in {settings.keys} is unreadable: {e}") from e


def _print_intact(report: LogReport, proven: list[tuple[Path, LogAnchor]],
                  held: Witnessed | None = None) -> None:
    out.print(f"intact: {report.entries} entries and {report.checkpoints} checkpoints verified; "
              f"head seq {report.head_seq} {report.head_hash}")
    for source, a in proven:  # an intact report proved every anchor
        out.print(f"anchor from {source}: line {a.size} still hashes to {a.head}; "
                  "the log continues from it")
    if held is not None:
        out.print(f"witness: line {held.size} still hashes to {held.head} (recorded "
                  f"{rfc3339(held.recorded_at)}); the log continues from it")
    for seq in report.recoveries:
        out.print(f"note: seq {seq} records a torn last line cut off after a crash "
                  "(the bytes are kept beside the log)")
    for seq in report.accepted:
        out.print(f"note: seq {seq} records unsigned entries an operator accepted "
                  "(skydd log seal --accept-unsigned)")


def _as_dict(report: LogReport) -> dict[str, object]:
    p = report.problem
    return {"path": report.path, "intact": p is None, "entries": report.entries,
            "checkpoints": report.checkpoints, "head": {"seq": report.head_seq, "hash": report.head_hash},
            "last_checkpoint": report.last_checkpoint, "unsigned": report.unsigned,
            "recoveries": list(report.recoveries), "accepted": list(report.accepted),
            "anchors": [a.to_dict() for a in report.anchors],
            "problem": None if p is None else {"kind": p.kind.value, "line": p.line, "seq": p.seq,
                                                "message": p.message}}


def _witness_dict(held: Witnessed | None, report: LogReport) -> dict[str, object] | None:
    if held is None:
        return None
    return {"size": held.size, "head": held.head, "at": held.at,
            "recorded_at": rfc3339(held.recorded_at), "proven": held.anchor in report.anchors}


def register(app: typer.Typer) -> None:
    """Attach ``verify``, ``seal`` and ``witness`` to the ``log`` group (made here when the app has none yet)."""
    group = next((g.typer_instance for g in app.registered_groups if g.name == "log"), None)
    if group is None:
        group = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")
        app.add_typer(group, name="log")
    group.command("verify")(verify)
    group.command("seal")(seal)
    group.command("witness")(witness)
