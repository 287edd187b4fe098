"""`fleet tune inventory/X.py`: measure the RUNNING fleet and write what it measured where the
inventory reads it (pyinfra's group_data beside the inventory). The pyinfra shell around the
pure core in celery_fleet/tune.py; nothing on any host is changed.

1. Celery's counters of every worker (`celery inspect stats`: CPU time, tasks done), read
   twice, --window seconds apart, through fleet-hoststatus on one worker host;
2. what the workers logged in the window (journalctl on each worker host): task runtimes,
   retries and 429s, failures;
3. the endpoint probe (files/fleet-probe) from the first embedding host, with its .env;
4. the plan of every embedding host before and after; the file, unless --dry.
"""

from __future__ import annotations

import json
import shlex
import time
from datetime import datetime, timezone
from pathlib import Path

import gevent
from pyinfra.context import ctx_state

from . import layout, tune
from .fleet import FleetError, plan_inventory
from .planview import embedding_line
from .remote import connect_inventory, run_command
from .sizing import ASSUMED_EMBEDDING_CPU_MS, ASSUMED_EMBEDDING_LATENCY_MS, slots_per_core
from .status_probe import planned_queues

TUNED_GROUP = "embedding_workers"  # the group whose group_data file fleet tune writes
JOURNAL_GREP = r"succeeded in|\] retry: |raised unexpected"


def _counters(host, planned, queues) -> tuple[dict[str, tune.WorkerCounters], dict]:
    worker = layout.planned_workers(planned.plan)[0]
    python = f"{layout.worker_venv(planned.settings['install_dir'])}/bin/python"
    command = (f"{layout.ENV_EXEC} {worker.env_file} {python} {layout.HOSTSTATUS} --fleet"
               + "".join(f" --queue {shlex.quote(q)}" for q in queues))
    ok, lines, errors = run_command(host, command, user=planned.settings["service_user"])
    try:
        answer = json.loads(lines[-1]) if ok and lines else {}
    except json.JSONDecodeError:
        answer = {}
    if "workers" not in answer:
        raise FleetError(f"host {host.name!r}: could not ask Celery for its workers' counters: "
                         + (answer.get("fleet_problem") or " ".join(errors or lines)[-300:]))
    counters = {node: tune.WorkerCounters(node, w.get("cpu_s", 0.0), w.get("tasks", 0),
                                          w.get("pid") or 0)
                for node, w in answer["workers"].items()}
    return counters, answer.get("queues", {})


def _journal(host, unit_prefix: str, since: float) -> list[str]:
    command = (f"journalctl -u {shlex.quote(unit_prefix + '*')} --since=@{int(since)} -o cat "
               f"--no-pager | grep -E {shlex.quote(JOURNAL_GREP)} || true")
    ok, lines, _ = run_command(host, command, sudo=True)
    return lines if ok else []


def _probe(host, planned, concurrency: int) -> dict:
    command = (f"{layout.ENV_EXEC} {layout.EMBEDDING_ENV} /usr/bin/python3 {layout.PROBE} "
               f"--json --concurrency {concurrency} "
               f"--requests {max(3 * concurrency, tune.MIN_PROBE_OK * 2)}")
    ok, lines, errors = run_command(host, command, user=planned.settings["service_user"])
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise FleetError(f"host {host.name!r}: the endpoint probe failed: "
                         f"{' '.join(errors or lines)[-300:]}") from None


def group_data_file(inventory_path: str) -> Path:
    """pyinfra reads group_data/<group>.py beside the inventory file for every inventory of
    that directory (pyinfra_cli.inventory.make_inventory_from_files)."""
    return Path(inventory_path).resolve().parent / "group_data" / f"{TUNED_GROUP}.py"


def run(inventory_path: str, window_s: float, dry: bool, out=print) -> int:
    state, inventory, planned = connect_inventory(inventory_path)
    hosts = {h.name: h for h in inventory if h.name in planned}
    embedding = [n for n in hosts if planned[n].plan.embedding]
    llm = [n for n in hosts if planned[n].plan.llm]
    workers = [n for n in hosts if layout.planned_workers(planned[n].plan)]
    unreachable = [h.name for h in inventory if h.name not in planned and h.groups]
    if not workers:
        raise FleetError("no worker host could be reached: nothing to measure")
    queues = list(dict.fromkeys(q for name in workers for q in planned_queues(planned[name])))
    asker = hosts[workers[0]]

    with ctx_state.use(state):
        started = time.time()
        before, waiting_before = _counters(asker, planned[asker.name], queues)
        counted = time.time()  # the window: from one reading to the other
        out(f"fleet tune: measuring the running fleet for {window_s:.0f} s "
            f"({len(embedding)} embedding host(s), {len(llm)} LLM host(s))...")
        gevent.sleep(window_s)
        after, waiting_after = _counters(asker, planned[asker.name], queues)
        window = time.time() - counted
        journals = {name: {"embedding": _journal(hosts[name], layout.EMBEDDING_PREFIX, started),
                           "llm": _journal(hosts[name], layout.LLM_PREFIX, started)}
                    for name in workers}

        measured = tune.Measured()
        embedding_nodes = {n for n in after if n.split("@")[0].startswith(
            layout.EMBEDDING_NODE + "-")}
        if embedding:
            cpu_ms, tasks, cpu_s = tune.cpu_per_task_ms(before, after, embedding_nodes)
            tune.cpu_values(cpu_ms, tasks, cpu_s, window, len(embedding), measured)
            probe_host = hosts[embedding[0]]
            settings = planned[probe_host.name].settings
            per_core = slots_per_core(
                settings["embedding_latency_ms"] or ASSUMED_EMBEDDING_LATENCY_MS,
                cpu_ms or settings["embedding_task_cpu_ms"] or ASSUMED_EMBEDDING_CPU_MS)
            concurrency = tune.probe_concurrency(
                max(planned[n].plan.facts.cores for n in embedding), per_core,
                len(embedding))
            out(f"probing the endpoint from {probe_host.name} (1, then {concurrency} at a "
                "time)...")
            answer = _probe(probe_host, planned[probe_host.name], concurrency)
            tune.endpoint_values(answer["one"], answer["many"], measured)
            measured.evidence.append(tune.runtime_evidence("embedding tasks", tune.parse_journal(
                [line for name in embedding for line in journals[name]["embedding"]])))

    out("")
    for line in measured.evidence:
        out(f"measured: {line}")
    for name in llm:
        for line in tune.llm_report(name, planned[name].plan, planned[name].settings,
                                    tune.parse_journal(journals[name]["llm"]), window,
                                    waiting_before, waiting_after):
            out(f"LLM {line}")
    for name in unreachable:
        out(f"fleet tune: host {name!r} could not be reached: not measured")
    if measured.refusals:
        out("\nfleet tune: not enough to tune from, nothing written:")
        for line in measured.refusals:
            out(f"  {line}")
        return 2
    if not measured.values:
        out("\nnothing to write: no embedding host")
        return 0

    overridden = tune.set_by_the_inventory(
        {n: inventory.get_host_data(n) for n in embedding}, measured.values)
    after_plans = plan_inventory(inventory, frozenset(h for h in inventory
                                                      if h.name not in planned),
                                 tuned=measured.values)
    out("\nthe plan of each embedding host, before -> after:")
    for name in embedding:
        out(f"  {name}: {embedding_line(planned[name].plan.embedding)} -> "
            f"{embedding_line(after_plans[name].plan.embedding)}")
    for line in overridden:
        out(f"  note: {line}")
    path = group_data_file(inventory_path)
    text = tune.group_data_text(measured, inventory_path,
                                datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    if dry:
        out(f"\n--dry: {path} not written; it would hold:\n{text}")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    out(f"\nwrote {path}: the next deploy applies it (pyinfra reads it for every inventory in "
        f"{path.parent.parent}); delete it to go back to the defaults")
    return 0
