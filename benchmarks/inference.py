"""Real inference through Celery on the lab (issue #13): the deployed llama.cpp server(s)
serving a ~110 M-parameter llama GGUF (random weights, F16: celery_fleet/lab/tiny_gguf.py
--size bench) on a 2-core lab host; for each shape (generations at once x threads each),
GENERATIONS generations of TOKENS tokens sent at once through Celery. Prints throughput, mean,
first and last completion. Asserts nothing about time.

    sudo .venv/bin/python benchmarks/inference.py [--generations 8] [--tokens 128] [--keep]

The plan on 2 cores is 1 x 2 (one generation at a time, every core). The sweep goes past it on
both axes: 2 and 4 at once (the servers then run one per slot: celery_fleet/inference.py) with
threads = cores (oversubscribed) and threads = cores / at once, and 1 x 4 (twice the cores).
Each shape is a real deploy (`pyinfra ... deploy.py` with llm_concurrency and llm_threads).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from celery_fleet import layout
from celery_fleet.lab import Lab, parse_hosts
from celery_fleet.lab import tiny_gguf

ROOT = Path(__file__).resolve().parents[1]
INSTANCE, SUBNET = "benchllm", "10.77.8.0/24"
HOSTS = "broker:ram=2G,cores=1,roles=broker llm:ram=8G,cores=2,roles=llm"
# (generations at once, threads each); the plan's own choice on 2 cores is (1, 2)
SHAPES = ((1, 2), (1, 1), (1, 4), (2, 2), (2, 1), (4, 2), (4, 1))
PORT = 8090  # the lab's fake API keeps 8080
SEND = r"""
import json, time
from datetime import datetime, timezone
from fleet_worker.tasks import generate
generate.delay("warm up", max_tokens=8).get(timeout=600)  # the model paged in
sent = datetime.now(timezone.utc)
results = [generate.delay(f"bench {i}", max_tokens=TOKENS) for i in range(COUNT)]
for r in results:
    r.get(timeout=1800)
done = [(r.date_done.replace(tzinfo=timezone.utc) - sent).total_seconds() for r in results]
print(json.dumps(done))
"""
ENV_EXEC = f"{layout.ENV_EXEC} {layout.LLM_ENV}"
VENV = layout.worker_venv("/opt/celery-fleet") + "/bin"


def inventory(path: Path, overrides: dict) -> Path:
    path.write_text(f"""
from celery_fleet.lab import Lab
from celery_fleet.lab.inventory import inventory_groups

_groups = inventory_groups(Lab({INSTANCE!r}).load_state())
for _hosts in _groups.values():
    for _name, _data in _hosts:
        _data.update({overrides!r}.get(_name, {{}}))
globals().update(_groups)
""")
    return path


def ssh(lab: Lab, state: dict, host: str, command: str, timeout: float = 3600) -> str:
    ip = next(h["ip"] for h in state["hosts"] if h["spec"]["name"] == host)
    result = subprocess.run([*lab.ssh_command(ip), command], capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"{host}: {command[:80]}... exited {result.returncode}: "
                         f"{result.stderr.strip()[-2000:]}")
    return result.stdout


def deploy(path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pyinfra", "-y", str(path), "deploy.py"],
                            cwd=ROOT, env=dict(os.environ, FLEET_LAB_INSTANCE=INSTANCE),
                            capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"deploy failed:\n{(result.stdout + result.stderr)[-4000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--keep", action="store_true", help="leave the lab up")
    args = parser.parse_args()
    lab = Lab(INSTANCE, subnet=SUBNET, say=lambda m: print(m, file=sys.stderr))
    state = lab.up(parse_hosts(HOSTS))
    rows = []
    with tempfile.TemporaryDirectory(prefix="fleet-inference-bench-") as tmp:
        model = tiny_gguf.write(Path(tmp) / "bench-110m.gguf", "bench")
        try:
            for concurrency, threads in SHAPES:
                path = inventory(Path(tmp) / "inventory.py", {"llm": {
                    "llm_model_path": str(model), "llm_server_port": PORT,
                    "llm_concurrency": concurrency, "llm_threads": threads,
                    "llm_context_size": 2048, "llm_kv_cache_per_task_mb": 512}})
                deploy(path)
                script = SEND.replace("TOKENS", str(args.tokens)).replace(
                    "COUNT", str(args.generations))
                done = json.loads(ssh(lab, state, "llm", f"sudo -u celery {ENV_EXEC} "
                                      f"{VENV}/python -c {shlex.quote(script)}"
                                      ).strip().splitlines()[-1])
                wall = max(done)
                rows.append((concurrency, threads, args.generations / wall,
                             args.generations * args.tokens / wall, statistics.mean(done),
                             min(done), wall))
                print(f"{concurrency} x {threads}: {rows[-1][2]:.2f} generations/s, mean "
                      f"completion {rows[-1][4]:.1f} s", file=sys.stderr)
        finally:
            if not args.keep:
                lab.down()
    plan = (1, 2)
    print(f"\n{args.generations} generations x {args.tokens} tokens sent at once, llama.cpp "
          "(llama-cpp-python 0.3.36), 110 M-parameter F16 llama, lab host of 2 cores\n")
    print("| at once x threads | throughput | tokens/s | mean completion | first | last |")
    print("|---|---|---|---|---|---|")
    for c, t, rate, tokens, mean, first, last in rows:
        mark = " (plan)" if (c, t) == plan else ""
        print(f"| {c} x {t}{mark} | {rate:.2f}/s | {tokens:.0f} | {mean:.1f} s | {first:.1f} s "
              f"| {last:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
