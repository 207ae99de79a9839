"""The e-ID lab CA and the card validator: every refusal names its reason; time is injected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.x509.oid import NameOID

from identity.eid import CardAuthority, CardIdentity, CardRefused, evaluate_card, verify_card

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ANNA = CardIdentity("SE2321000016-T001", "Anna", "Torsby")


@pytest.fixture(scope="module")
def ca() -> CardAuthority:
    return CardAuthority.create("Test e-ID CA", AT - timedelta(days=1))


def test_valid_card_gives_its_hsa_id(ca: CardAuthority) -> None:
    cert, _ = ca.issue_card(ANNA, AT)
    assert verify_card(cert, [ca.cert], [ca.crl(AT)], AT) == "SE2321000016-T001"
    assert cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "SE2321000016-T001"


def test_revoked_card_is_refused_after_revocation_only(ca: CardAuthority) -> None:
    cert, _ = ca.issue_card(ANNA, AT)
    ca.revoke(cert.serial_number, AT + timedelta(hours=1))
    crl = ca.crl(AT + timedelta(hours=2))
    with pytest.raises(CardRefused) as err:
        verify_card(cert, [ca.cert], [crl], AT + timedelta(hours=2))
    assert set(err.value.reasons) == {"revocation"}
    assert "revoked on" in err.value.reasons["revocation"]


def test_card_from_another_ca_fails_the_chain(ca: CardAuthority) -> None:
    foreign = CardAuthority.create("Foreign CA", AT - timedelta(days=1))
    cert, _ = foreign.issue_card(ANNA, AT)
    verdict = evaluate_card(cert, [ca.cert], [ca.crl(AT), foreign.crl(AT)], AT)
    assert set(verdict.reasons) == {"chain"}


def test_same_name_different_key_fails_the_chain(ca: CardAuthority) -> None:
    impostor = CardAuthority.create("Test e-ID CA", AT - timedelta(days=1))
    cert, _ = impostor.issue_card(ANNA, AT)
    assert "chain" in evaluate_card(cert, [ca.cert], [ca.crl(AT)], AT).reasons


def test_expired_and_not_yet_valid(ca: CardAuthority) -> None:
    cert, _ = ca.issue_card(ANNA, AT, days=30)
    later = AT + timedelta(days=31)
    assert set(evaluate_card(cert, [ca.cert], [ca.crl(later)], later).reasons) == {"validity"}
    early = AT - timedelta(hours=1)
    assert "validity" in evaluate_card(cert, [ca.cert], [ca.crl(AT)], early).reasons


@pytest.mark.parametrize("kwargs,reason", [
    ({"key_usage_critical": False}, "key-usage"),
    ({"client_auth": False}, "eku"),
    ({"policy_oid": "1.2.3.4"}, "policy"),
])
def test_card_shape_is_checked(ca: CardAuthority, kwargs: dict, reason: str) -> None:
    cert, _ = ca.issue_card(ANNA, AT, **kwargs)
    assert set(evaluate_card(cert, [ca.cert], [ca.crl(AT)], AT).reasons) == {reason}


def test_missing_or_stale_crl_refuses(ca: CardAuthority) -> None:
    cert, _ = ca.issue_card(ANNA, AT)
    assert "no CRL" in evaluate_card(cert, [ca.cert], [], AT).reasons["revocation"]
    stale = ca.crl(AT, next_update=timedelta(days=1))
    assert "stale" in evaluate_card(cert, [ca.cert], [stale], AT + timedelta(days=2)).reasons["revocation"]


def test_crl_signed_by_another_key_refuses(ca: CardAuthority) -> None:
    cert, _ = ca.issue_card(ANNA, AT)
    impostor = CardAuthority(CardAuthority.create("x", AT).key, ca.cert)
    assert "bad signature" in evaluate_card(cert, [ca.cert], [impostor.crl(AT)], AT).reasons["revocation"]


def test_lab_pki_revokes_and_publishes(tmp_path) -> None:
    from cryptography import x509

    from identity.eid.lab import LabPki

    pki = LabPki(tmp_path / "pki")
    pki.ensure(AT)
    card = pki.issue_card("anna", ANNA, AT)
    assert pki.issue_card("anna", ANNA, AT).serial == card.serial  # issued once
    pki.revoke("anna", AT)
    crl = x509.load_pem_x509_crl(pki.crl_pem.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(card.serial) is not None
    # as found, key files are world-readable (d.key-files-private catches it)
    assert (tmp_path / "pki" / "eid-ca.key").stat().st_mode & 0o004
    eid = x509.load_pem_x509_certificate(pki.eid_ca_pem.read_bytes())
    with pytest.raises(CardRefused):
        verify_card(x509.load_pem_x509_certificate(card.cert.read_bytes()), [eid], [crl], AT)
