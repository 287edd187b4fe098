"""`fleet status`: what runs on each host, against its plan (pure: readings in, report out).

The readings come from celery_fleet/status_probe.py (systemctl on every host,
files/fleet-hoststatus on worker hosts). Every difference from the plan is a line
marked `!!` in the text and an entry of `differences`; `fleet status` exits 1 when any.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from . import layout
from .checks import pool_shape, running_shape, shape_difference
from .sizing import HostPlan, memory_recycle_mb

MARK = "!!"
REDIS_FULL_SHARE = 0.8  # noeviction: at maxmemory Redis refuses new tasks


@dataclass
class HostReading:
    """What one host answered; reachable False when SSH failed."""
    name: str
    roles: tuple[str, ...]
    plan: HostPlan | None
    fake_backend: bool = False
    flower: bool = False
    reachable: bool = True
    units: dict[str, dict] = field(default_factory=dict)  # systemctl show, per unit
    hostname: str = ""
    memory_mb: dict[str, float | None] = field(default_factory=dict)
    gpus: list[dict] = field(default_factory=list)
    gpu_problem: str = ""
    problem: str = ""  # the host-side status command failed


def expected_units(reading: HostReading) -> list[str]:
    units = []
    if "broker" in reading.roles:
        # with RabbitMQ, Redis (results) runs on the first broker only
        if reading.plan is None or reading.plan.redis:
            units.append(layout.REDIS_UNIT)
        units.append(layout.FIREWALL_UNIT)
        if reading.plan and reading.plan.rabbitmq:
            units.append(layout.RABBITMQ_UNIT)
    if reading.plan and layout.planned_workers(reading.plan):
        units += [w.unit for w in layout.planned_workers(reading.plan)]
        units.append(layout.WORKER_GROUP_UNIT)
    server = reading.plan.llm.server if reading.plan and reading.plan.llm else None
    if server:  # the inference servers the plan runs (celery_fleet/inference.py)
        units += [layout.llm_server_unit_name(i.name) for i in server.instances]
    if reading.flower and "broker" in reading.roles:
        units.append(layout.FLOWER_UNIT)
    if reading.fake_backend:
        units.append(layout.FAKE_OPENAI_UNIT)
    return units


def parse_units(lines: list[str]) -> dict[str, dict]:
    """`systemctl show -p Id -p ActiveState ... UNIT...`: blocks separated by blank lines."""
    units, block = {}, {}
    for line in [*lines, ""]:
        line = line.strip()
        if not line:
            if block.get("Id"):
                units[block["Id"]] = block
            block = {}
            continue
        key, _, value = line.partition("=")
        block[key] = value
    return units


def build(readings: list[HostReading], fleet: dict, previous: dict | None = None) -> dict:
    """The report: per host, per unit, with the differences from the plan. previous: an
    earlier report, to show how each worker's memory moved since (fleet status --watch)."""
    differences: list[str] = []
    workers_seen = fleet.get("workers")  # None: the broker could not be asked
    planned_nodes = set()
    hosts = []
    for reading in readings:
        host = {"name": reading.name, "reachable": reading.reachable, "units": [], "gpus": []}
        hosts.append(host)
        if not reading.reachable:
            differences.append(f"{reading.name}: unreachable over SSH")
            continue
        if reading.problem:
            differences.append(f"{reading.name}: {reading.problem}")
            if not reading.units:  # nothing was read: no unit is known to be down
                continue
        workers = {w.unit: w for w in layout.planned_workers(reading.plan)} \
            if reading.plan else {}
        # a unit named only by another's After=/Before= (the firewall's, for both brokers) is
        # listed "not-found": nothing is there
        for unit in expected_units(reading) + sorted(
                u for u, state in reading.units.items() if u not in expected_units(reading)
                and state.get("LoadState") != "not-found"):
            row = _unit_row(reading, unit, workers.get(unit), workers_seen, differences,
                            previous)
            host["units"].append(row)
            if workers.get(unit):
                planned_nodes.add(workers[unit].node_prefix + reading.hostname)
        host["gpus"] = reading.gpus
        if reading.gpu_problem and reading.plan and reading.plan.llm \
                and reading.plan.llm.device == "gpu":
            differences.append(f"{reading.name}: GPUs cannot be read: {reading.gpu_problem}")
    # a host not read may run any of the workers that answer: stray ones are named only when
    # every host was read
    every_host_read = all(r.reachable and (r.units or not r.problem) for r in readings)
    for node in sorted(set(workers_seen or {}) - planned_nodes):
        if every_host_read:
            differences.append(f"worker {node} answers but is in no host's plan (a host left "
                               "out of the inventory still runs it)")
    queues = _queues(fleet, differences)
    rabbitmq = _rabbitmq(fleet, differences)
    if rabbitmq:
        queues = rabbitmq.pop("queue_rows")
    redis = fleet.get("redis")
    if redis and redis.get("maxmemory_mb") and \
            redis["used_mb"] > redis["maxmemory_mb"] * REDIS_FULL_SHARE:
        differences.append(f"redis: {redis['used_mb']} MB used of {redis['maxmemory_mb']} MB "
                           "maxmemory: near full, it will refuse new tasks (noeviction)")
    if fleet.get("fleet_problem"):
        differences.append(f"the broker cannot be asked: {fleet['fleet_problem']}")
    unacked = fleet.get("unacked")
    if rabbitmq:
        unacked = sum(q["unacked"] for q in queues)
    return {"hosts": hosts, "queues": queues, "unacked": unacked, "redis": redis,
            "rabbitmq": rabbitmq, "differences": differences}


def _rabbitmq(fleet: dict, differences: list[str]) -> dict | None:
    """broker: rabbitmq: the cluster's members, alarms, and each fleet queue's depth,
    consumers, unacknowledged deliveries and replicas online (quorum health)."""
    if "rabbitmq_nodes" not in fleet:
        return None
    nodes = fleet["rabbitmq_nodes"]
    if "rabbitmq" not in fleet:
        differences.append(f"rabbitmq cannot be asked: {fleet.get('rabbitmq_problem')}")
        return None
    seen = fleet["rabbitmq"]
    running = sorted(seen["running_nodes"])
    for node in sorted(set(nodes) - set(running)):
        differences.append(f"rabbitmq node {node} is not running (asked {seen['asked']}): "
                           f"its queues' replicas wait for it; {len(running)} of {len(nodes)} "
                           "run")
    for alarm in seen["alarms"]:
        differences.append(f"rabbitmq alarm {json.dumps(alarm)}: publishers are blocked until "
                           "it clears (memory or disk)")
    rows = []
    majority = len(nodes) // 2 + 1
    for q in sorted(seen["queues"], key=lambda q: q["name"]):
        if q["name"].startswith(("celery_delayed_", "celeryev.")) or \
                q["name"].endswith(".pidbox"):
            continue  # Celery's delayed delivery, events, control: not task queues
        online = len(q.get("online") or []) if q.get("type") == "quorum" else None
        rows.append({"queue": q["name"], "waiting": q["messages_ready"],
                     "unacked": q["messages_unacknowledged"], "consumers": q["consumers"],
                     "type": q.get("type"), "online": online,
                     "members": len(q.get("members") or [])})
        if q["name"] == layout.RABBITMQ_DEAD_LETTER and q["messages_ready"]:
            differences.append(f"queue {q['name']}: {q['messages_ready']} task(s) delivered "
                               f"{layout.RABBITMQ_DELIVERY_LIMIT} times without an ack "
                               "(they kill their worker?): look at them, then purge or resend")
        elif q["messages_ready"] and not q["consumers"]:
            differences.append(f"queue {q['name']}: {q['messages_ready']} task(s) waiting and "
                               "no worker consumes it: they stay PENDING")
    for q in seen["queues"]:
        if q.get("type") == "quorum" and len(q.get("online") or []) < majority:
            differences.append(f"queue {q['name']}: {len(q.get('online') or [])} of "
                               f"{len(q.get('members') or [])} replicas online, no majority: "
                               "it accepts and delivers nothing until a node comes back")
    return {"asked": seen["asked"], "running_nodes": running, "nodes": nodes,
            "alarms": seen["alarms"], "queue_rows": rows}


def _unit_row(reading: HostReading, unit: str, planned: layout.PlannedWorker | None,
              workers_seen: dict | None,
              differences: list[str], previous: dict | None) -> dict:
    state = reading.units.get(unit)
    row = {"unit": unit, "state": (f"{state['ActiveState']} ({state['SubState']})"
                                   if state else "not installed"),
           "restarts": int(state.get("NRestarts") or 0) if state else 0, "marks": []}

    def differs(text: str) -> None:
        row["marks"].append(text)
        differences.append(f"{reading.name} {unit}: {text}")

    expected = unit in expected_units(reading)
    if not expected:
        if state and state.get("ActiveState") == "active":
            differs("runs but is not in the plan (deploy again to retire it)")
        return row
    if not state or state.get("ActiveState") != "active":
        differs(f"{row['state']}, planned to run" + ("" if state else ": deploy"))
    if not planned:
        return row
    row["plan"] = pool_shape(planned.pool, planned.concurrency)
    node = planned.node_prefix + reading.hostname
    seen = (workers_seen or {}).get(node)
    if seen:
        row.update(runs=running_shape(seen["implementation"], seen["concurrency"]),
                   active=seen["active"], reserved=seen["reserved"], node=node)
        difference = shape_difference(planned, seen["implementation"], seen["concurrency"])
        if difference:
            differs(f"{difference} (deploy again)")
    elif state and state.get("ActiveState") == "active" and workers_seen is not None:
        differs(f"worker {node} does not answer the broker")
    used = reading.memory_mb.get(unit)
    row.update(memory_mb=used, memory_max_mb=planned.memory_max_mb)
    if used is not None:
        before = _previous_memory(previous, reading.name, unit)
        if before is not None:
            row["memory_change_mb"] = round(used - before, 1)
        recycle = memory_recycle_mb(planned.memory_max_mb)
        if used > recycle:
            differs(f"uses {used:.0f} MB, above its {recycle} MB mark (of "
                    f"{planned.memory_max_mb} MB): it restarts warm after its tasks")
    gpu = planned.gpu_index
    if gpu is not None and reading.gpus and gpu not in [g["index"] for g in reading.gpus]:
        differs(f"pinned to GPU {gpu}, which the host no longer shows")
    return row


def _previous_memory(previous: dict | None, host: str, unit: str) -> float | None:
    for h in (previous or {}).get("hosts", []):
        for row in h["units"] if h["name"] == host else []:
            if row["unit"] == unit:
                return row.get("memory_mb")
    return None


def _queues(fleet: dict, differences: list[str]) -> list[dict]:
    workers = fleet.get("workers", {})
    rows = []
    for name, waiting in (fleet.get("queues") or {}).items():
        consumers = sorted(node for node, w in workers.items() if name in w["queues"])
        rows.append({"queue": name, "waiting": waiting, "consumers": len(consumers)})
        if waiting and not consumers:
            differences.append(f"queue {name}: {waiting} task(s) waiting and no worker consumes "
                               "it: they stay PENDING")
    return rows


def format_report(report: dict, when: str) -> str:
    lines = [f"celery-fleet status, {when}", ""]
    width = max([12] + [len(q["queue"]) for q in report["queues"]])  # an app's long names
    for q in report["queues"]:
        lines.append(f"queue {q['queue']:<{width}} {q['waiting']:>6} waiting   "
                     f"{q['consumers']} worker(s) consume it")
    if report["unacked"] is not None:
        lines.append(f"taken by workers, not yet acknowledged: {report['unacked']}")
    if report.get("rabbitmq"):
        r = report["rabbitmq"]
        lines.append(f"rabbitmq: {len(r['running_nodes'])} of {len(r['nodes'])} node(s) "
                     f"running (asked {r['asked']}), alarms: {len(r['alarms']) or 'none'}")
        for q in report["queues"]:
            if q.get("online") is not None:
                lines.append(f"  {q['queue']}: {q['online']} of {q['members']} replicas "
                             f"online, {q['unacked']} unacknowledged")
    if report["redis"]:
        r = report["redis"]
        lines.append(f"redis: {r['used_mb']} MB used of {r['maxmemory_mb'] or '-'} MB maxmemory")
    for host in report["hosts"]:
        lines += ["", host["name"] + ("" if host["reachable"] else f"  {MARK} unreachable")]
        for row in host["units"]:
            lines.append("  " + _format_row(row))
            lines += [f"    {MARK} {mark}" for mark in row["marks"]]
        for gpu in host["gpus"]:
            lines.append(f"  GPU {gpu['index']}: {gpu['util_pct']}% busy, "
                         f"{gpu['memory_used_mb']} / {gpu['memory_total_mb']} MiB")
    lines.append("")
    if report["differences"]:
        lines.append(f"{MARK} {len(report['differences'])} difference(s) from the plan:")
        lines += [f"   {d}" for d in report["differences"]]
    else:
        lines.append("everything runs as planned")
    return "\n".join(lines)


def _format_row(row: dict) -> str:
    text = f"{row['unit']:<40} {row['state']:<18}"
    if "plan" in row:
        runs = row.get("runs", "?")
        text += f" {runs:<12} plan {row['plan']:<12}"
        if "active" in row:
            text += f" {row['active']} running, {row['reserved']} reserved"
    if row.get("memory_mb") is not None:
        text += f"  {row['memory_mb']:.0f} MB of {row['memory_max_mb']} MB"
        if "memory_change_mb" in row:
            text += f" ({row['memory_change_mb']:+.0f})"
    if row["restarts"]:
        text += f"  restarted {row['restarts']}x"
    return text.rstrip()
