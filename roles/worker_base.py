"""What every worker host needs: the service user, trusted CAs, a virtualenv with Celery,
gevent and the worker application, and the env-exec helper."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.facts.files import FileContents
from pyinfra.operations import files, server

from celery_fleet import layout
from celery_fleet.fleetplan import PlannedHost
from celery_fleet.wheel import build_wheel
from roles.python_env import python_venv, trust_certificates


def uploaded_wheel(wheel: Path, install_dir: str, what: str) -> str:
    """Upload a wheel built on the controller (once: files.put compares checksums); its path
    on the host."""
    dest = f"{layout.wheel_dir(install_dir, wheel.parent.name)}/{wheel.name}"
    files.directory(name=f"Ensure the wheel directory of {what} exists",
                    path=str(Path(dest).parent), user="root", group="root", mode="755")
    files.put(name=f"Upload {what} ({wheel.name})", src=str(wheel), dest=dest, mode="644")
    return dest


@operation()
def app_installed(venv: str, requirements: list[str], app: str):
    """pip install the requirements, then (re)install the application itself; nothing to do
    when the marker in the virtualenv says exactly these were installed."""
    digest = hashlib.sha256("\n".join([*requirements, app]).encode()).hexdigest()
    marker = layout.installed_marker(venv)
    installed = host.get_fact(FileContents, path=marker)
    if installed and installed[0].strip() == digest:
        host.noop("the worker application and its requirements are installed")
        return
    quoted = " ".join(f"'{r}'" for r in requirements)
    # the second install replaces an application whose version number did not change
    yield (f"{venv}/bin/pip install --quiet --no-input {quoted} '{app}' && "
           f"{venv}/bin/pip install --quiet --no-input --no-deps --force-reinstall '{app}' && "
           f"echo {digest} > {marker}")


@deploy("Worker host base")
def worker_base(h: PlannedHost) -> list:
    """Returns the operations whose change means the workers must restart."""
    s = h.settings
    user, install_dir = s["service_user"], s["install_dir"]
    venv = layout.worker_venv(install_dir)
    trust_certificates(h)
    server.group(name=f"Ensure the group {user} exists", group=user, system=True)
    server.user(name=f"Ensure the service user {user} exists", user=user, group=user,
                system=True, home=install_dir, shell="/usr/sbin/nologin", ensure_home=False)
    files.directory(name=f"Ensure {install_dir} exists, owned by root (workers cannot change "
                    "their code)", path=install_dir, user="root", group="root", mode="755")
    files.directory(name=f"Ensure {layout.CONFIG_DIR} exists, readable by {user} only",
                    path=layout.CONFIG_DIR, user="root", group=user, mode="750")
    files.directory(name="Ensure the helper directory exists", path=layout.HELPER_DIR,
                    user="root", group="root", mode="755")
    files.put(name="Install env-exec (runs a command with a worker's .env)",
              src=str(layout.FILES_DIR / "env-exec"), dest=layout.ENV_EXEC, mode="755")
    files.put(name="Install fleet-hoststatus (what `fleet status` reads, for any application)",
              src=str(layout.FILES_DIR / "fleet-hoststatus"), dest=layout.HOSTSTATUS,
              mode="755")
    files.put(name="Install fleet-probe (is the embeddings endpoint the bottleneck?)",
              src=str(layout.FILES_DIR / "fleet-probe"), dest=layout.PROBE, mode="755")

    python_venv(h, venv)
    source = Path(s["worker_app_source"])
    if source.is_dir():
        app = uploaded_wheel(build_wheel(source), install_dir, "the worker application")
    else:
        app = s["worker_app_source"]  # a pip requirement: name==version, URL, ...
    installed = app_installed(name="Install Celery, gevent and the worker application",
                              venv=venv, requirements=[*s["worker_requirements"],
                                                       *layout.STATUS_REQUIREMENTS],
                              app=app)
    return [installed]
