"""Where a secret comes from (pure): an inventory value either is the secret or names where the
controller reads it, so that a team shares one password without committing it:

    redis_password = "env:FLEET_REDIS_PASSWORD"         # the controller's environment
    redis_password = "file:~/.config/fleet/redis"       # a file on the controller (first line)
    redis_password = "command:pass show fleet/redis"    # what a command prints (a password
                                                        # manager); run without a shell

Only a deploy reads them (celery_fleet/secrets.py), once per source and run; `fleet plan` and
`fleet status` never need a secret. What a source gives is checked like a value typed in.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

KINDS = ("env", "file", "command")
ACCEPTED = "env:NAME, file:PATH or command:CMD (read on the controller when deploying)"


@dataclass(frozen=True)
class SecretSource:
    kind: str  # one of KINDS
    where: str  # the variable's name, the file's path, the command line

    def __str__(self) -> str:  # what messages show: where it comes from, never the secret
        return f"{self.kind}:{self.where}"


def source_of(value) -> SecretSource | None:
    """The source a value names, or None where the value is the secret itself."""
    if not isinstance(value, str):
        return None
    kind, colon, where = value.partition(":")
    return SecretSource(kind, where.strip()) if colon and kind in KINDS else None


def well_formed(source: SecretSource) -> bool:
    if source.kind == "env":
        return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", source.where) is not None
    if source.kind == "command":
        try:
            return bool(shlex.split(source.where))
        except ValueError:  # an unclosed quote
            return False
    return bool(source.where)


def shown(value) -> str:
    """A secret setting's value as messages may print it: its source, or a mask."""
    source = source_of(value)
    if source is not None:
        return repr(str(source))
    return f"<hidden, {len(value)} characters>" if isinstance(value, str) else "<hidden>"
