"""The officers' console: server-rendered pages for security officers (docs/adr/0012-console.md).

Login is OIDC authorization code + PKCE (S256) + state + nonce against the inventory's Keycloak;
the tokens are verified with ``identity``'s ``Verifier`` and must carry the access decision's
acr/amr (card + OTP) and the ``security-officer`` realm role. Sessions live in the server's
memory; a cookie holds only a random 256-bit id.
"""
