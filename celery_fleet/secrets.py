"""The controller's secrets: read from the source an inventory value names (env:, file:,
command:, celery_fleet/secret_sources.py), or generated once and kept in files only their owner
can read. Only a deploy reads them; each source is read once per run (a password manager asks
once, not once per host)."""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
from pathlib import Path

from .secret_sources import SecretSource, source_of
from .settings import SETTINGS, Settings, SettingsError

PASSWORD_BYTES = 32  # 256 bits; token_urlsafe gives [A-Za-z0-9_-], safe in URLs and .env files
COMMAND_TIMEOUT_S = 120  # a password manager may wait for its user to unlock it


class ControllerSecrets:
    """fleetplan.Secrets on this controller."""

    def __init__(self, environ=None):
        self._environ = os.environ if environ is None else environ
        self._read: dict[SecretSource, str] = {}

    def read(self, host: str, key: str, value: str) -> str:
        source = source_of(value)
        if source is None:
            return value
        if source not in self._read:
            try:
                self._read[source] = self._from(source)
            except _Unreadable as why:
                raise SettingsError(host, key, value, f"{why} ({SETTINGS[key].accepted})")
        secret = self._read[source]
        if not SETTINGS[key].check(secret):
            raise SettingsError(host, key, value, f"what it gives is refused: "
                                f"{SETTINGS[key].accepted}")
        return secret

    def _from(self, source: SecretSource) -> str:
        if source.kind == "env":
            if not self._environ.get(source.where):
                raise _Unreadable(f"the controller's environment has no {source.where}")
            return self._environ[source.where]
        if source.kind == "file":
            path = Path(source.where).expanduser()
            try:
                return _first_line(path.read_text())
            except (OSError, UnicodeDecodeError) as error:
                raise _Unreadable(f"cannot read {path} on the controller: "
                                  f"{getattr(error, 'strerror', None) or error}")
        try:
            done = subprocess.run(shlex.split(source.where), capture_output=True, text=True,
                                  timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise _Unreadable(f"the command did not run: {error}")
        if done.returncode != 0:
            # its error output, not its standard output: that would be the secret
            said = done.stderr.strip().splitlines()[-1:] or ["nothing on stderr"]
            raise _Unreadable(f"the command exited with {done.returncode}: {said[0][:200]}")
        return _first_line(done.stdout)

    def kept(self, settings: Settings, name: str, may_create: bool) -> str | None:
        return read_or_create(settings["secrets_dir"], name, may_create)


class _Unreadable(Exception):
    pass


def _first_line(text: str) -> str:
    # `pass show` prints the password on its first line, other fields below it
    return (text.splitlines() or [""])[0].strip()


def read_or_create(secrets_dir: str, name: str, may_create: bool = True) -> str | None:
    directory = Path(secrets_dir)
    path = directory / name
    if path.exists():
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return path.read_text().strip()
    if not may_create:
        return None
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    value = secrets.token_urlsafe(PASSWORD_BYTES)
    # written whole beside it, then linked in place: two controllers (or two test runs)
    # making the same secret at once both end with the one that was linked first
    partial = directory / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(value + "\n")
        os.link(partial, path)
    except FileExistsError:
        return path.read_text().strip()
    finally:
        partial.unlink()
    return value
