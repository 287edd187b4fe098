"""`fleet status inventory/X.py`: connect to every host with pyinfra, read what runs there,
and hand the readings to the pure report (celery_fleet/status.py). Nothing is changed.

Every host: one `systemctl show` of the fleet's units. Worker hosts: files/fleet-hoststatus
(installed by the deploy, whatever the application) with the worker venv's Python, as the
service user (memory with psutil, GPUs with pynvml); on the first worker host with `--fleet`
as well (Celery's view of every worker, the queues, Redis's memory), so the broker is asked
once.
"""

from __future__ import annotations

import json
import shlex
import signal
from datetime import datetime, timezone

import gevent
from gevent.event import Event
from gevent.pool import Pool
from pyinfra.context import ctx_state

from . import layout, status
from .fleet import host_roles
from .fleetplan import PlannedHost
from .remote import connect_inventory, run_command

UNITS_COMMAND = (
    "hostname; units=$(systemctl list-units --all --plain --no-legend 'celery-*' "
    f"'{layout.REDIS_UNIT}' '{layout.RABBITMQ_UNIT}' 2>/dev/null | awk '{{print $1}}'); "
    'if [ -n "$units" ]; then systemctl show -p Id -p LoadState -p ActiveState -p SubState '
    "-p NRestarts -p MainPID $units; fi"
)
PARALLEL_HOSTS = 32
# broker: rabbitmq: the cluster and the fleet's queues as one broker sees them (as root)
RABBITMQ_COMMAND = (
    "rabbitmqctl -q cluster_status --formatter json | tr -d '\\n'; echo; "
    f"rabbitmqctl -q list_queues -p {layout.RABBITMQ_VHOST} name type messages_ready "
    "messages_unacknowledged consumers members online --formatter json | tr -d '\\n'; echo"
)


def read_rabbitmq(host) -> dict:
    """{"rabbitmq": {"running_nodes", "alarms", "queues"}} from one broker, or a problem."""
    ok, lines, errors = run_command(host, RABBITMQ_COMMAND, sudo=True)
    try:
        cluster, queues = (json.loads(line) for line in lines[:2])
    except (ValueError, TypeError):
        ok = False
    if not ok:
        return {"rabbitmq_problem": f"{host.name}: rabbitmqctl failed: "
                                    f"{' '.join(errors or lines)[-300:]}"}
    return {"rabbitmq": {"asked": host.name, "running_nodes": cluster.get("running_nodes", []),
                         "alarms": cluster.get("alarms", []), "queues": queues}}


def _read_host(host, planned: PlannedHost, fleet_queues: list[str] | None
               ) -> tuple[status.HostReading, dict]:
    """fleet_queues: on the one host that asks the broker too, every queue the plan has."""
    settings = planned.settings
    reading = status.HostReading(host.name, planned.roles, planned.plan,
                                 fake_backend=settings["fake_openai_backend"],
                                 flower=settings["flower"])
    ok, lines, errors = run_command(host, UNITS_COMMAND)
    if not ok:
        reading.problem = f"systemctl failed: {' '.join(errors)[:200]}"
        return reading, {}
    reading.hostname = lines[0].strip() if lines else ""
    reading.units = status.parse_units(lines[1:])
    workers = layout.planned_workers(planned.plan)
    if not workers:
        return reading, {}
    python = f"{layout.worker_venv(settings['install_dir'])}/bin/python"
    command = (f"{layout.ENV_EXEC} {workers[0].env_file} {python} {layout.HOSTSTATUS}"
               + (" --fleet" if fleet_queues is not None else "")
               + "".join(f" --queue {shlex.quote(q)}" for q in fleet_queues or []) + " "
               + " ".join(shlex.quote(w.unit) for w in workers))
    ok, lines, errors = run_command(host, command, user=settings["service_user"])
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


def planned_queues(planned: PlannedHost) -> list[str]:
    """The queues this host's workers consume (the broker host's answer counts every queue
    declared, and every queue a worker consumes, besides)."""
    roles = planned.roles
    return [*(planned.settings["embedding_queues"] if "embedding" in roles else []),
            *(planned.settings["llm_queues"] if "llm" in roles else [])]


class FleetProbe:
    """Connected once; `read()` as often as --watch asks."""

    def __init__(self, inventory_path: str):
        self.state, self.inventory, self.planned = connect_inventory(inventory_path)

    def read(self) -> tuple[list[status.HostReading], dict]:
        fleet_host = next((name for name, planned in self.planned.items()
                           if layout.planned_workers(planned.plan)), None)
        queues = list(dict.fromkeys(q for planned in self.planned.values()
                                    for q in planned_queues(planned)))

        def read_one(host):
            if host.name not in self.planned:
                return status.HostReading(host.name, host_roles(host), None,
                                          reachable=False), {}
            planned = self.planned[host.name]
            try:
                return _read_host(host, planned,
                                  queues if host.name == fleet_host else None)
            except Exception as error:  # the host went away during --watch: say so, go on
                return status.HostReading(host.name, planned.roles, planned.plan,
                                          problem=f"cannot be read: {error}"[:300]), {}

        hosts = [h for h in self.inventory if host_roles(h)]
        with ctx_state.use(self.state):
            results = Pool(PARALLEL_HOSTS).map(read_one, hosts)
            rabbitmq = self._read_rabbitmq(hosts, results)
        fleet = next((f for _, f in results if f), {})
        if not fleet:
            fleet = {"fleet_problem": f"the broker was not asked: {fleet_host} could not run "
                                      "the status command" if fleet_host else
                                      "no worker host was reached: the broker was not asked"}
        return [reading for reading, _ in results], {**fleet, **rabbitmq}

    def _read_rabbitmq(self, hosts, results) -> dict:
        """The first RabbitMQ broker that answers (another, when one is down)."""
        cluster = next((p.rabbitmq for p in self.planned.values() if p.rabbitmq), None)
        if cluster is None:
            return {}
        answer = {"rabbitmq_problem": "no broker was reached"}
        for host, (reading, _) in zip(hosts, results):
            if "broker" in reading.roles and reading.reachable and not reading.problem:
                answer = read_rabbitmq(host)
                if "rabbitmq" in answer:
                    break
        return {**answer, "rabbitmq_nodes": list(cluster.nodes)}


def exit_status(readings, report) -> int:
    """0: every host runs its plan; 1: a difference; 2: a host could not be asked at all (as
    `fleet plan` exits for it: nothing is known of that host)."""
    if any(not reading.reachable for reading in readings):
        return 2
    return 1 if report["differences"] else 0


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
            return exit_status(readings, report)
        previous = previous or report  # memory change since the first reading
        if stop.wait(watch_s):
            return 0
        if not as_json:
            out("")
