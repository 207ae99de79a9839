"""Identity: Keycloak, e-ID cards, OTP, token verification (``identity.tokens``) and the access
decision (``identity.decision``). Import from the submodules."""
