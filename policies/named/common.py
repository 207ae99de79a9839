"""Named checks shared by several levels."""

from __future__ import annotations

import stat
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..checks import Outcome, named_check, resolve
from ..errors import EvidenceMissing


@named_check("files_private")
def files_private(data: Any, params: Mapping[str, Any], at: datetime) -> Outcome:
    """Every file under a key store is owned by the expected user and readable by it alone,
    and its directory is not open to group or others."""
    files = resolve(data, ("files",), "files")
    if not isinstance(files, list) or not files:
        raise EvidenceMissing("no files observed in the key store")
    # The owner the inventory declares travels with the evidence; the control's param is the default.
    owner = data.get("owner_uid", params.get("owner", 0)) if isinstance(data, dict) else params.get("owner", 0)
    bad: dict[str, str] = {}
    for f in files:
        mode = int(f["mode"], 8)
        kind_dir = f.get("type") == "dir"
        allowed = 0o700 if kind_dir else 0o600
        if mode & ~allowed & 0o777 or f.get("uid") != owner:
            bad[f["path"]] = f"{stat.filemode(mode | (stat.S_IFDIR if kind_dir else stat.S_IFREG))} uid={f.get('uid')}"
    if bad:
        listed = ", ".join(f"{p} ({m})" for p, m in sorted(bad.items())[:5])
        return Outcome(False, f"{len(bad)} path(s) readable beyond uid {owner}: {listed}", bad)
    return Outcome(True, f"{len(files)} path(s) private to uid {owner}", {"files": len(files)})
