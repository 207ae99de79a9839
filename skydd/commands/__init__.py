"""CLI command groups, one module per area; each defines ``register(app)``."""

from pathlib import Path
from typing import Annotated

import typer

# ``--inventory`` of every command that works on an estate (``Settings.inventory`` resolves the default).
InventoryOpt = Annotated[Path | None, typer.Option(
    "--inventory", help="Inventory YAML (default: $SKYDD_INVENTORY, else $SKYDD_HOME/inventory.yaml).")]

MODULES = ("catalog", "report", "log", "waiver", "attest", "apply", "training", "decide", "lab", "inventory", "console")
