"""CLI command groups, one module per area; each defines ``register(app)``."""

MODULES = ("catalog", "report", "log", "waiver", "attest", "apply", "training", "decide", "lab", "inventory")
