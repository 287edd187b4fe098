"""Flower on the broker host, when the inventory says `flower: true`: Celery's web monitor
(workers, tasks, Prometheus metrics at /metrics), bound to the broker's private address,
behind a generated password, reachable only from the fleet and flower_allowed_networks (the
broker's firewall). `flower: false` again removes it."""

from __future__ import annotations

import time

from pyinfra import host
from pyinfra.api import StringCommand, deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.facts.files import File
from pyinfra.operations import files, pip, python, systemd
from pyinfra.operations.util import any_changed

from celery_fleet import render
from celery_fleet.fleet import HostDeploy
from roles.python_env import python_venv, trust_certificates

UNIT_PATH = f"{render.UNIT_DIR}/{render.FLOWER_UNIT}"
CHECK_TIMEOUT_S = 60


@deploy("Flower")
def flower(d: HostDeploy) -> None:
    venv = render.flower_venv(d)
    trust_certificates(d.settings)
    files.directory(name=f"Ensure {d.settings['install_dir']} exists",
                    path=d.settings["install_dir"], user="root", group="root", mode="755")
    files.directory(name=f"Ensure {render.CONFIG_DIR} exists", path=render.CONFIG_DIR)
    python_venv(venv, d.settings)
    installed = pip.packages(name="Install Flower", packages=list(render.FLOWER_REQUIREMENTS),
                             virtualenv=venv)
    env = files.template(name="Render Flower's settings (0600: broker URL and login)",
                         src=str(render.TEMPLATES_DIR / "flower.env.j2"), dest=render.FLOWER_ENV,
                         user="root", group="root", mode="600", **render.flower_env(d))
    unit = files.template(name="Render the Flower unit (private address only)",
                          src=str(render.TEMPLATES_DIR / f"{render.FLOWER_UNIT}.j2"),
                          dest=UNIT_PATH, mode="644", **render.flower_unit(d))
    files.directory(name="Ensure Flower's drop-in directory exists",
                    path=render.dropin_dir(render.FLOWER_UNIT), mode="755")
    sandbox = files.template(name="Render Flower's sandbox (hardening drop-in)",
                             src=str(render.TEMPLATES_DIR / "hardening.conf.j2"),
                             dest=f"{render.dropin_dir(render.FLOWER_UNIT)}/hardening.conf",
                             mode="644", **render.hardening(render.FLOWER_UNIT, gpu=False))
    systemd.daemon_reload(name="Reload systemd (a unit file changed)",
                          _if=any_changed(unit, sandbox))
    restart = systemd.service(name="Restart Flower (its files changed)",
                              service=render.FLOWER_UNIT, running=True, restarted=True,
                              _if=any_changed(installed, env, unit, sandbox))
    running = systemd.service(name="Ensure Flower runs and starts at boot",
                              service=render.FLOWER_UNIT, running=True, enabled=True)
    url = f"http://{d.private_address}:{d.settings['flower_port']}/healthcheck"
    python.call(name="Check Flower answers on the private address", function=_check,
                url=url, _if=any_changed(restart, running))


def _check(url: str) -> None:
    probe = StringCommand(f"python3 -c 'import urllib.request; "
                          f"print(urllib.request.urlopen(\"{url}\", timeout=3).read())'")
    deadline = time.monotonic() + CHECK_TIMEOUT_S
    while True:
        ok, _ = host.run_shell_command(probe)
        if ok:
            return
        if time.monotonic() > deadline:
            _, journal = host.run_shell_command(StringCommand(
                f"journalctl -u {render.FLOWER_UNIT} -n 15 --no-pager -o cat"), _sudo=True)
            raise PyinfraError(f"Flower does not answer on {url}:\n" + journal.stdout)
        time.sleep(2)


@deploy("Remove Flower (no longer enabled)")
def retire_flower() -> None:
    if not host.get_fact(File, path=UNIT_PATH):
        return
    systemd.service(name="Stop and disable Flower", service=render.FLOWER_UNIT, running=False,
                    enabled=False)
    files.file(name="Remove Flower's unit", path=UNIT_PATH, present=False)
    files.directory(name="Remove Flower's drop-ins", path=render.dropin_dir(render.FLOWER_UNIT),
                    present=False)
    files.file(name="Remove Flower's settings", path=render.FLOWER_ENV, present=False)
    systemd.daemon_reload(name="Reload systemd (Flower's unit is gone)")
