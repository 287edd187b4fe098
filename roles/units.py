"""Worker units shared by the worker roles: render a worker's unit and sandbox, start/restart
planned instances, retire the rest; the host's workers as one service (celery-worker)."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from celery_fleet import layout, render
from celery_fleet.facts import WorkerUnits
from celery_fleet.fleetplan import PlannedHost

from .rendered import sandbox, template


def unit_files(kind: str, unit_template: str, unit_values: dict, gpu: bool) -> list:
    """A worker's template unit and its sandbox drop-in, and a daemon-reload when either
    changed. Returns [unit, sandbox, reload]: the first two restart the worker when changed."""
    unit = template(f"Render the {kind} worker unit (pool, concurrency, limits of the plan)",
                    layout.unit_path(unit_template), mode="644", **unit_values)
    dropin = sandbox(f"the {kind} worker's", unit_template, gpu)
    reload = systemd.daemon_reload(name="Reload systemd (a unit file changed)",
                                   _if=any_changed(unit, dropin))
    return [unit, dropin, reload]


def run_instances(units: list[str], changed_by: list) -> list:
    """Restart each unit when one of changed_by changed, one host at a time (_serial): a
    restart is a warm shutdown that waits for running tasks, and the other hosts keep
    consuming meanwhile. Make sure each unit runs at boot."""
    ops = []
    for unit in units:
        ops.append(systemd.service(name=f"Restart {unit} (its files changed), one host at a "
                                   "time", service=unit, running=True, restarted=True,
                                   _if=any_changed(*changed_by), _serial=True))
        ops.append(systemd.service(name=f"Ensure {unit} runs and starts at boot", service=unit,
                                   running=True, enabled=True))
    return ops


def retire_instances(prefix: str, keep: list[str]) -> list:
    """Stop and disable instances of a worker unit that the plan no longer has."""
    return [
        systemd.service(name=f"Stop and disable {unit} (no longer in the plan)", service=unit,
                        running=False, enabled=False)
        for unit in host.get_fact(WorkerUnits) if unit.startswith(prefix) and unit not in keep
    ]


@deploy("This host's workers as one service (celery-worker)")
def worker_group(h: PlannedHost) -> None:
    """`systemctl status celery-worker` shows the host's workers; stop and restart act on all.
    Never restarted by the deploy: restarting it restarts every worker of the host at once
    (PartOf=), and the plan's units reach it with a daemon-reload (its Wants=)."""
    files.put(name="Install worker-states (what systemctl status celery-worker shows)",
              src=str(layout.FILES_DIR / "worker-states"), dest=layout.WORKER_STATES,
              mode="755")
    unit = template("Render celery-worker.service (the plan's workers, as one service)",
                    layout.unit_path(layout.WORKER_GROUP_UNIT), mode="644",
                    **render.worker_group(h))
    systemd.daemon_reload(name="Reload systemd (celery-worker.service changed)",
                          _if=unit.did_change)
    systemd.service(name="Ensure celery-worker runs and starts at boot",
                    service=layout.WORKER_GROUP_UNIT, running=True, enabled=True)


@deploy("Remove celery-worker (no worker left on this host)")
def retire_worker_group() -> None:
    if not host.get_fact(File, path=layout.unit_path(layout.WORKER_GROUP_UNIT)):
        return
    systemd.service(name="Stop and disable celery-worker", service=layout.WORKER_GROUP_UNIT,
                    running=False, enabled=False)
    files.file(name="Remove celery-worker.service",
               path=layout.unit_path(layout.WORKER_GROUP_UNIT), present=False)
    systemd.daemon_reload(name="Reload systemd (celery-worker.service is gone)")


@deploy("Retire workers this host no longer runs")
def retire_worker(prefix: str) -> list:
    return retire_instances(prefix, keep=[])
