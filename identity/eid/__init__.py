"""e-ID cards: a lab CA issuing SITHS-like card certificates, revocation with a published CRL,
and a validator that says why a card is refused."""

from .ca import SITHS_LAB_POLICY_OID, CardAuthority, CardIdentity, pem_of
from .validator import CardRefused, CardVerdict, evaluate_card, verify_card

__all__ = [
           "SITHS_LAB_POLICY_OID",
           "CardAuthority",
           "CardIdentity",
           "CardRefused",
           "CardVerdict",
           "evaluate_card",
           "pem_of",
           "verify_card",
]
