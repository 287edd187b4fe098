"""Benchmark of what a fault costs each broker (issue #14): the same load (600 embeddings + 6
generations) and the same fault, repeated, on a lab deployed with Redis or with RabbitMQ;
prints for each run how many tasks completed, were lost or ran twice. Asserts nothing.

    sudo .venv/bin/python benchmarks/broker_faults.py --broker rabbitmq --runs 10
    sudo .venv/bin/python benchmarks/broker_faults.py --broker redis --runs 10
    ... --fault kill-workers | power-cut-broker | restart-brokers | none
    ... --fault none --latency-ms 0 --embeddings 2000 --generations 0   # throughput

Its own lab (instance "faults", 10.77.7.0/24): 1 broker for Redis, 3 for RabbitMQ, a worker
host (embedding + llm, 2 cores) and a producer host. With Redis, a message a dead worker held
comes back after visibility_timeout: the fleet is deployed with short task time limits
(visibility 100 s) and each run waits up to 400 s for its results.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from celery_fleet.lab import Lab, load, parse_hosts
from celery_fleet.lab.inventory import inventory_text
from celery_fleet.lab.pytest_plugin import RunningLab

ROOT = Path(__file__).resolve().parents[1]
WORKER = "w1"
DATA = {"fake_openai_latency_ms": 400, "fake_openai_completion_cpu_ms": 3000,
        "embedding_task_time_limit_s": 10, "llm_task_time_limit_s": 40}


def hosts_spec(brokers: int) -> str:
    return " ".join([f"b{i}:ram=2G,cores=1,roles=broker" for i in range(1, brokers + 1)]
                    + [f"{WORKER}:ram=4G,cores=2,roles=embedding+llm",
                       "app:ram=1G,cores=1,roles=client"])


def deploy(lab: RunningLab, inventory: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pyinfra", "-y", inventory, "deploy.py"],
                            cwd=ROOT, env=lab.env(), capture_output=True, text=True,
                            timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"deploy failed:\n{(result.stdout + result.stderr)[-3000:]}")


def fault_of(lab: RunningLab, name: str, brokers: list[str]):
    if name == "kill-workers":
        def kill():
            for unit in ("celery-embedding-worker@1.service", "celery-llm-worker@cpu.service"):
                lab.ssh(WORKER, f"kill -9 {load.main_pid(lab, WORKER, unit)}")
        return kill, None
    if name == "power-cut-broker":
        victim = brokers[-1]
        return (lambda: lab.lab.power_cut(victim)), (lambda: lab.lab.power_on(victim))
    if name == "none":
        return (lambda: None), None
    if name == "restart-brokers":
        unit = "rabbitmq-server" if len(brokers) > 1 else "redis-server"
        return (lambda: [lab.ssh(b, f"systemctl restart {unit}", timeout=180)
                         for b in brokers]), None
    raise SystemExit(f"unknown fault {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", choices=("redis", "rabbitmq"), default="rabbitmq")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--fault", default="kill-workers",
                        choices=("kill-workers", "power-cut-broker", "restart-brokers",
                                 "none"))
    parser.add_argument("--latency-ms", type=int, default=DATA["fake_openai_latency_ms"],
                        help="the fake API's latency (0: tasks cost the broker and Celery only)")
    parser.add_argument("--embeddings", type=int, default=600)
    parser.add_argument("--generations", type=int, default=6)
    parser.add_argument("--keep", action="store_true", help="leave the lab up")
    args = parser.parse_args()
    brokers = 3 if args.broker == "rabbitmq" else 1
    lab = Lab(instance="faults", subnet="10.77.7.0/24", suite="bookworm")
    running = RunningLab(lab, lab.up(parse_hosts(hosts_spec(brokers))))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            inventory = Path(tmp) / "inventory_faults.py"
            inventory.write_text(inventory_text({**DATA, "broker": args.broker,
                                                 "fake_openai_latency_ms": args.latency_ms}))
            deploy(running, str(inventory))
            fault, recover = fault_of(running, args.fault, [f"b{i}" for i in
                                                            range(1, brokers + 1)])
            totals = {"lost": 0, "twice": 0}
            for run in range(1, args.runs + 1):
                result = load.under_load(running, (WORKER,), f"{args.fault}-{run}", fault,
                                         args.embeddings, args.generations, timeout=400)
                print(result.line(f"{args.broker} {args.fault} run {run}/{args.runs}"),
                      flush=True)
                totals["lost"] += len(result.lost) + len(result.wrong)
                totals["twice"] += result.twice
                if recover:
                    recover()
                    deploy(running, str(inventory))  # the node is back in the cluster
            print(f"{args.broker} {args.fault}: {args.runs} runs of "
                  f"{args.embeddings + args.generations} tasks: "
                  f"{totals['lost']} lost in all, {totals['twice']} API call(s) made twice")
    finally:
        if not args.keep and os.environ.get("FLEET_LAB_KEEP") != "1":
            lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
