"""CLI command groups, one module per area; each defines ``register(app)``."""

MODULES = ("lab", "training", "apply", "log", "decide", "attest")
