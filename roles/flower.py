"""Flower on the broker host, when the inventory says `flower: true`: Celery's web monitor
(workers, tasks, Prometheus metrics at /metrics), bound to the broker's private address,
behind a generated password, reachable only from the fleet and flower_allowed_networks (the
broker's firewall). `flower: false` again removes it."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import files, pip, python, systemd
from pyinfra.operations.util import any_changed

from celery_fleet import layout, render
from celery_fleet.fleetplan import PlannedHost
from celery_fleet.remote import run_command, wait_until_healthy
from roles.python_env import python_venv, trust_certificates

from .rendered import sandbox, template

UNIT_PATH = layout.unit_path(layout.FLOWER_UNIT)
CHECK_TIMEOUT_S = 60


@deploy("Flower")
def flower(h: PlannedHost) -> None:
    install_dir = h.settings["install_dir"]
    venv = layout.flower_venv(install_dir)
    trust_certificates(h)
    files.directory(name=f"Ensure {install_dir} exists", path=install_dir, user="root",
                    group="root", mode="755")
    files.directory(name=f"Ensure {layout.CONFIG_DIR} exists", path=layout.CONFIG_DIR)
    python_venv(h, venv)
    installed = pip.packages(name="Install Flower", packages=list(layout.FLOWER_REQUIREMENTS),
                             virtualenv=venv)
    env = template("Render Flower's settings (0600: broker URL and login)", layout.FLOWER_ENV,
                   user="root", group="root", mode="600", **render.flower_env(h))
    unit = template("Render the Flower unit (private address only)", UNIT_PATH, mode="644",
                    **render.flower_unit(h))
    dropin = sandbox("Flower's", layout.FLOWER_UNIT, gpu=False)
    systemd.daemon_reload(name="Reload systemd (a unit file changed)",
                          _if=any_changed(unit, dropin))
    restart = systemd.service(name="Restart Flower (its files changed)",
                              service=layout.FLOWER_UNIT, running=True, restarted=True,
                              _if=any_changed(installed, env, unit, dropin))
    running = systemd.service(name="Ensure Flower runs and starts at boot",
                              service=layout.FLOWER_UNIT, running=True, enabled=True)
    url = f"http://{h.private_address}:{h.settings['flower_port']}/healthcheck"
    python.call(name="Check Flower answers on the private address", function=_check,
                url=url, _if=any_changed(restart, running))


def _check(url: str) -> None:
    probe = (f"python3 -c 'import urllib.request; "
             f"print(urllib.request.urlopen(\"{url}\", timeout=3).read())'")

    def problems() -> list[str]:
        ok, _, _ = run_command(host, probe)
        return [] if ok else [f"no answer on {url}"]

    wait_until_healthy(host, problems, [layout.FLOWER_UNIT], CHECK_TIMEOUT_S,
                       "Flower does not answer")


@deploy("Remove Flower (no longer enabled)")
def retire_flower() -> None:
    if not host.get_fact(File, path=UNIT_PATH):
        return
    systemd.service(name="Stop and disable Flower", service=layout.FLOWER_UNIT, running=False,
                    enabled=False)
    files.file(name="Remove Flower's unit", path=UNIT_PATH, present=False)
    files.directory(name="Remove Flower's drop-ins", path=layout.dropin_dir(layout.FLOWER_UNIT),
                    present=False)
    files.file(name="Remove Flower's settings", path=layout.FLOWER_ENV, present=False)
    systemd.daemon_reload(name="Reload systemd (Flower's unit is gone)")
