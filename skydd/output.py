"""The CLI's consoles and who is acting. User text is never read as Rich markup: these consoles
print every string as it is (``markup=False``)."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from rich.console import Console

out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def actor() -> str:
    return os.environ.get("SKYDD_ACTOR") or os.environ.get("SUDO_USER") or os.environ.get("USER") or "unknown"


def now() -> datetime:
    return datetime.now(UTC)
