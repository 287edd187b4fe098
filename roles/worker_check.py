"""After the workers (re)started: each is active and reports its planned pool and concurrency.

Runs only on hosts where something changed in this deploy, so a deploy that changes nothing
reports no change; a deploy that changed something proves the change took effect.
"""

from __future__ import annotations

import time

from pyinfra import host
from pyinfra.api import StringCommand, deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.operations import python
from pyinfra.operations.util import any_changed

from celery_fleet import render
from celery_fleet.checks import compare_stats
from celery_fleet.fleet import HostDeploy

CHECK_TIMEOUT_S = 90  # a worker connects and answers within seconds; a crash loop never does


def _run(command: str, user: str | None = None) -> tuple[bool, str]:
    arguments = {"_sudo": True}
    if user:
        arguments["_sudo_user"] = user
    ok, output = host.run_shell_command(StringCommand(command), **arguments)
    return ok, output.stdout


def _verify(workers: list[dict], settings: dict) -> None:
    _, hostname = _run("hostname")
    hostname = hostname.strip()
    venv = f"{settings['install_dir']}/venv"
    nodes = ",".join(w["node_prefix"] + hostname for w in workers)
    inspect = (f"{render.ENV_EXEC} {workers[0]['env_file']} {venv}/bin/celery "
               f"-A {settings['worker_app_module']} inspect stats --json --timeout 5 "
               f"--destination {nodes}")
    deadline = time.monotonic() + CHECK_TIMEOUT_S
    while True:
        problems = []
        for worker in workers:
            _, state = _run(f"systemctl is-active {worker['unit']} || true")
            if state.strip() != "active":
                problems.append(f"{worker['unit']} is {state.strip()}")
        if not problems:
            _, stats = _run(inspect + " 2>/dev/null || true", user=settings["service_user"])
            problems = compare_stats(workers, hostname, stats)
        if not problems:
            return
        if time.monotonic() > deadline:
            units = " ".join(f"-u {w['unit']}" for w in workers)
            _, journal = _run(f"journalctl {units} -n 15 --no-pager -o cat || true")
            raise PyinfraError("workers do not run as planned:\n  " + "\n  ".join(problems)
                               + "\nlast log lines:\n" + journal)
        time.sleep(2)


@deploy("Check the workers")
def check_workers(d: HostDeploy, changes: list) -> None:
    workers = render.planned_workers(d.plan)
    if not workers:
        return
    python.call(name="Check each worker is active and runs its planned pool and concurrency",
                function=_verify, workers=workers, settings=d.settings,
                _if=any_changed(*changes))
