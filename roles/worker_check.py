"""After the workers (re)started: each is active and reports its planned pool and concurrency.

Runs only on hosts where something changed in this deploy, so a deploy that changes nothing
reports no change; a deploy that changed something proves the change took effect.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import python
from pyinfra.operations.util import any_changed

from celery_fleet import layout
from celery_fleet.checks import compare_stats
from celery_fleet.fleetplan import PlannedHost
from celery_fleet.remote import run_command, wait_until_healthy

CHECK_TIMEOUT_S = 90  # a worker connects and answers within seconds; a crash loop never does


def _verify(h: PlannedHost) -> None:
    workers = layout.planned_workers(h.plan)
    _, out, _ = run_command(host, "hostname")
    hostname = "".join(out).strip()
    nodes = ",".join(w.node_prefix + hostname for w in workers)
    # Celery's bare app (no -A): the broker from CELERY_BROKER_URL, whatever the application
    inspect = (f"{layout.ENV_EXEC} {workers[0].env_file} "
               f"{layout.worker_venv(h.settings['install_dir'])}/bin/celery "
               f"inspect stats --json --timeout 5 --destination {nodes} 2>/dev/null || true")

    def problems() -> list[str]:
        found = []
        for worker in workers:
            _, state, _ = run_command(host, f"systemctl is-active {worker.unit} || true",
                                      sudo=True)
            if "".join(state).strip() != "active":
                found.append(f"{worker.unit} is {''.join(state).strip()}")
        if found:
            return found
        _, stats, _ = run_command(host, inspect, user=h.settings["service_user"])
        return compare_stats(workers, hostname, "\n".join(stats))

    wait_until_healthy(host, problems, [w.unit for w in workers], CHECK_TIMEOUT_S,
                       "workers do not run as planned")


@deploy("Check the workers")
def check_workers(h: PlannedHost, changes: list) -> None:
    if not layout.planned_workers(h.plan):
        return
    python.call(name="Check each worker is active and runs its planned pool and concurrency",
                function=_verify, h=h, _if=any_changed(*changes))
