"""Key-store permissions: the owner and mode of every file under a key folder."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .interface import Collector, CollectorError, Observation


class KeyStoreCollector(Collector):
    kinds = ("files.keystore",)
    timeout = 10.0

    def __init__(self, source_id: str, path: Path, owner_uid: int = 0, **kw: str | None) -> None:
        super().__init__(source_id, **kw)
        self.path = path
        self.owner_uid = owner_uid

    def collect(self) -> Iterable[Observation]:
        if not self.path.is_dir():
            raise CollectorError(f"key store {self.path} does not exist")
        entries = []
        for root, dirs, files in os.walk(self.path):
            for name in [None, *sorted(files)]:
                p = Path(root) if name is None else Path(root) / name
                try:
                    st = p.lstat()
                except OSError as err:
                    raise CollectorError(f"cannot stat {p}: {err.strerror}") from err
                entries.append({"path": str(p), "type": "dir" if stat.S_ISDIR(st.st_mode) else "file",
                                "mode": format(stat.S_IMODE(st.st_mode), "04o"), "uid": st.st_uid,
                                "gid": st.st_gid})
            dirs.sort()
        yield Observation(self.kinds[0], self.source_id, {"path": str(self.path), "owner_uid": self.owner_uid,
                                                       "files": entries})


def from_inventory(inventory: Any, home: Path) -> list[Collector]:
    munis = {s.id: s.municipality for s in inventory.sites}
    return [KeyStoreCollector(k.id, Path(k.path), k.owner_uid, site=k.site, municipality=munis.get(k.site))
            for k in inventory.key_stores]
