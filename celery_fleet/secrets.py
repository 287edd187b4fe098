"""Secrets kept on the controller: generated once, in files only their owner can read."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PASSWORD_BYTES = 32  # 256 bits; token_urlsafe gives [A-Za-z0-9_-], safe in URLs and .env files


def read_or_create(secrets_dir: str, name: str) -> str:
    directory = Path(secrets_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / name
    if path.exists():
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return path.read_text().strip()
    value = secrets.token_urlsafe(PASSWORD_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value
