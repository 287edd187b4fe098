"""`fleet tune` on the running lab (issue #12): each worker host's fake API set to a known
latency (100 ms) and capacity (8 requests at once); tune measures the workers while tasks
flow, probes the endpoint and writes the values beside the inventory, where `fleet plan`
(and so the next deploy) reads them. Too little data is refused and writes nothing."""

import re
import subprocess
import sys

from .conftest import ROOT, as_service_user, deploy, lab_inventory_with

WORKER_HOSTS = ("cpu-small", "gpu-box")
LATENCY_MS, CAPACITY = 100, 8
SEND = ("{VENV}/python -c 'from fleet_worker.tasks import embed\n"
        "for i in range({n}): embed.delay([f\"tune {{i}}\"])'")
PURGE = "{VENV}/python -c 'from fleet_worker.app import app; app.control.purge()'"
VENV = "/opt/celery-fleet/venv/bin"


def fleet(lab, *args):
    result = subprocess.run([sys.executable, "-m", "celery_fleet.cli", *args], cwd=ROOT,
                            env=lab.env(), capture_output=True, text=True, timeout=600)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_fleet_tune_writes_what_the_running_fleet_measured(lab, deployed, tmp_path):
    inventory = lab_inventory_with(tmp_path, {h: {"fake_openai_latency_ms": LATENCY_MS,
                                                  "fake_openai_capacity": CAPACITY}
                                              for h in WORKER_HOSTS})
    written = tmp_path / "group_data" / "embedding_workers.py"
    try:
        deploy(lab, inventory)
        idle = fleet(lab, "tune", inventory, "--window", "10")
        assert idle.returncode == 2, idle.stdout + idle.stderr
        assert "the CPU per task needs at least 200" in idle.stdout
        assert not written.exists()

        # ~160 tasks/s for the two hosts' fakes of 8 x 100 ms: the queue lasts the window
        as_service_user(lab, "cpu-small", SEND.format(VENV=VENV, n=4000), timeout=180)
        tuned = fleet(lab, "tune", inventory, "--window", "15")
        out = tuned.stdout
        print(out)  # the figures, for whoever runs it with -s
        assert tuned.returncode == 0, out + tuned.stderr
        namespace: dict = {}
        exec(written.read_text(), namespace)
        assert LATENCY_MS <= namespace["embedding_latency_ms"] <= LATENCY_MS * 1.6, out
        assert CAPACITY - 2 <= namespace["embedding_endpoint_concurrency"] <= CAPACITY, out
        assert 0 < namespace["embedding_task_cpu_ms"] < 100, out
        assert "Evidence:" in namespace["__doc__"], namespace["__doc__"]
        assert re.search(r"for \d+ tasks in (1[5-9]|2[0-9]) s on 2 host\(s\)", namespace["__doc__"]), \
            namespace["__doc__"]
        assert "the plan of each embedding host, before -> after:" in out
        assert "gpu-box: threads x16 in 2 processes -> " in out, out
        assert "LLM cpu-small: " in out, out  # the LLM side is reported, never written

        # the inventory reads it: the plan now follows the measured endpoint
        plan = fleet(lab, "plan", inventory)
        assert plan.returncode == 0, plan.stderr
        serves = f"the endpoint serves {namespace['embedding_endpoint_concurrency']} requests"
        assert serves in plan.stdout, plan.stdout
    finally:
        as_service_user(lab, "cpu-small", PURGE.format(VENV=VENV), timeout=60)
        deploy(lab)  # the default lab for the tests after this one
