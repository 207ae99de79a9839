"""Secret references: the inventory never holds a secret, only ``env:NAME`` or ``file:PATH``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from .errors import InputError


def _secret_ref(value: str) -> str:
    scheme, sep, rest = value.partition(":")
    if not sep or scheme not in ("env", "file") or not rest:
        raise ValueError("secrets must be a reference 'env:NAME' or 'file:PATH', never a value")
    return value


SecretRef = Annotated[str, AfterValidator(_secret_ref)]


def _folder_url(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("https", "file") or not rest.strip("/"):
        raise ValueError("must be an https://HOST/PATH/ or file:///PATH/ URL of a folder")
    return value


FolderUrl = Annotated[str, AfterValidator(_folder_url)]


def resolve_secret(ref: str) -> str:
    """Read the secret a reference points at; raises ``InputError`` when it is absent."""
    scheme, _, rest = ref.partition(":")
    if scheme == "env":
        if rest not in os.environ:
            raise InputError(f"secret {ref}: environment variable {rest} is not set")
        return os.environ[rest]
    path = Path(rest)
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise InputError(f"secret {ref}: cannot read {path}: {err.strerror}") from err
