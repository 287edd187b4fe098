"""`fleet status inventory/X.py`: connect to every host with pyinfra, read what runs there,
and hand the readings to the pure report (celery_fleet/status.py). Nothing is changed.

Every host: one `systemctl show` of the fleet's units. Worker hosts: the worker venv's
`python -m fleet_worker.hoststatus` as the service user (memory with psutil, GPUs with
pynvml); on the first worker host with `--fleet` as well (Celery's view of every worker, the
queues, Redis's memory), so the broker is asked once.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
from datetime import datetime, timezone

import gevent
from gevent.event import Event
from gevent.pool import Pool
from pyinfra.api import Config, State, StringCommand
from pyinfra.api.connect import connect_all
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory

from . import render, status
from .fleet import not_in_this_run, plan_inventory, roles_of

UNITS_COMMAND = (
    "hostname; units=$(systemctl list-units --all --plain --no-legend 'celery-*' "
    "'redis-server.service' 2>/dev/null | awk '{print $1}'); "
    'if [ -n "$units" ]; then systemctl show -p Id -p ActiveState -p SubState -p NRestarts '
    "-p MainPID $units; fi"
)
PARALLEL_HOSTS = 32


def _run(host, command: str, **arguments) -> tuple[bool, list[str], list[str]]:
    ok, output = host.run_shell_command(StringCommand(command), print_output=False,
                                        print_input=False, **arguments)
    return ok, output.stdout_lines, output.stderr_lines


def _read_host(host, plan, settings, fleet_query: bool) -> tuple[status.HostReading, dict]:
    reading = status.HostReading(host.name, roles_of(host), plan,
                                 fake_backend=settings["fake_openai_backend"],
                                 flower=settings["flower"])
    ok, lines, errors = _run(host, UNITS_COMMAND)
    if not ok:
        reading.problem = f"systemctl failed: {' '.join(errors)[:200]}"
        return reading, {}
    reading.hostname = lines[0].strip() if lines else ""
    reading.units = status.parse_units(lines[1:])
    workers = render.planned_workers(plan) if plan else []
    if not workers:
        return reading, {}
    venv = f"{settings['install_dir']}/venv/bin/python"
    command = (f"{render.ENV_EXEC} {workers[0]['env_file']} {venv} -m fleet_worker.hoststatus"
               + (" --fleet" if fleet_query else "") + " "
               + " ".join(shlex.quote(w["unit"]) for w in workers))
    ok, lines, errors = _run(host, command, _sudo=True, _sudo_user=settings["service_user"])
    try:
        answer = json.loads(lines[-1]) if ok and lines else None
    except json.JSONDecodeError:
        answer = None
    if answer is None:
        reading.problem = ("the status command failed (deployed with an older celery-fleet? "
                           f"deploy again): {' '.join(errors or lines)[-300:]}")
        return reading, {}
    reading.hostname = answer.get("hostname") or reading.hostname
    reading.memory_mb = answer.get("memory_mb", {})
    reading.gpus = answer.get("gpus", [])
    reading.gpu_problem = answer.get("gpu_problem", "")
    fleet = {k: answer[k] for k in ("workers", "queues", "unacked", "redis", "fleet_problem")
             if k in answer}
    return reading, fleet


class FleetProbe:
    """Connected once; `read()` as often as --watch asks."""

    def __init__(self, inventory_path: str):
        self.state = State(check_for_changes=False)
        with ctx_state.use(self.state):
            self.inventory = make_inventory(inventory_path, cwd=os.getcwd())
            self.state.init(self.inventory, Config())
            connect_all(self.state)
            self.unreachable = not_in_this_run(self.inventory, self.state)
            self.planned = plan_inventory(self.inventory, self.unreachable)

    def read(self) -> tuple[list[status.HostReading], dict]:
        fleet_host = next((name for name, (_, _, plan) in self.planned.items()
                           if render.planned_workers(plan)), None)

        def read_one(host):
            if host.name not in self.planned:
                return status.HostReading(host.name, roles_of(host), None, reachable=False), {}
            _, settings, plan = self.planned[host.name]
            try:
                return _read_host(host, plan, settings, host.name == fleet_host)
            except Exception as error:  # the host went away during --watch: say so, go on
                return status.HostReading(host.name, roles_of(host), plan,
                                          problem=f"cannot be read: {error}"[:300]), {}

        hosts = [h for h in self.inventory if roles_of(h)]
        with ctx_state.use(self.state):
            results = Pool(PARALLEL_HOSTS).map(read_one, hosts)
        fleet = next((f for _, f in results if f), {})
        if not fleet:
            fleet = {"fleet_problem": f"the broker was not asked: {fleet_host} could not run "
                                      "the status command" if fleet_host else
                                      "no worker host in the plan: the broker was not asked"}
        return [reading for reading, _ in results], fleet


def run(inventory_path: str, as_json: bool, watch_s: float | None, out=print) -> int:
    probe = FleetProbe(inventory_path)
    previous = None
    # Ctrl-C ends --watch between two readings; pyinfra runs on gevent, whose hub would print
    # a KeyboardInterrupt raised while it sleeps
    stop = Event()
    gevent.signal_handler(signal.SIGINT, stop.set)
    while True:
        readings, fleet = probe.read()
        report = status.build(readings, fleet, previous)
        when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        if as_json:
            out(json.dumps(dict(report, checked=when)))
        else:
            out(status.format_report(report, when))
        if watch_s is None:
            return 1 if report["differences"] else 0
        previous = previous or report  # memory change since the first reading
        if stop.wait(watch_s):
            return 0
        if not as_json:
            out("")
