"""Properties of the audit log: any changed byte is caught; the fast line writer is canonical."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from audit.log import GENESIS, AuditLog, verify_log
from audit.log.format import RESERVED_EVENTS, pending_item
from audit.log.format import entry_line as _entry_line
from audit.signing import Signer
from estate.canonical import canonical_json

SIGNER = Signer(Ed25519PrivateKey.generate())

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@settings(database=None)
@given(event=st.text(min_size=1, max_size=12), actor=st.text(min_size=1, max_size=12),
       data=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
       seq=st.integers(0, 10**9))
def test_the_fast_line_writer_is_canonical_json(event: str, actor: str, data: dict, seq: int) -> None:
    entry = {"seq": seq, "at": "2026-11-25T12:00:00.000000Z", "event": event, "actor": actor,
             "data": data, "prev": GENESIS}
    assert _entry_line(entry) == canonical_json(entry)
    if event not in RESERVED_EVENTS:  # the pre-encoded form the writer completes under its lock
        pending = pending_item(event, actor, data, None)
        assert pending.line(seq, entry["at"], GENESIS) == canonical_json(entry)


@cache
def sealed_log() -> bytes:
    """Seven entries and four checkpoints (genesis, every 3, the end), with awkward data."""
    clock = iter(datetime(2026, 11, 25, tzinfo=UTC) + timedelta(seconds=i) for i in range(100))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "audit.log"
        with AuditLog(path, SIGNER, clock=lambda: next(clock), checkpoint_every=3) as audit_log:
            audit_log.append_many([("audit", "ålice", {"i": i, "text": "a \"quoted\" ✓ line\\n",
                                                        "n": [1.5, None, True]}) for i in range(7)])
        return path.read_bytes()


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_changed_byte_is_caught(data: st.DataObject) -> None:
    """Changing any one byte leaves no log that verifies as whole and fully signed."""
    original = sealed_log()
    pos = data.draw(st.integers(0, len(original) - 1), label="position")
    byte = data.draw(st.integers(0, 255), label="byte")
    assume(original[pos] != byte)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "audit.log"
        path.write_bytes(original[:pos] + bytes([byte]) + original[pos + 1:])
        report = verify_log(path, SIGNER.public_key)
    assert not (report.intact and report.unsigned == 0 and report.entries == 11), report


def test_the_sealed_log_itself_verifies() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "audit.log"
        path.write_bytes(sealed_log())
        report = verify_log(path, SIGNER.public_key)
    assert report.intact and report.unsigned == 0 and report.entries == 11
    assert report.checkpoints == 4
