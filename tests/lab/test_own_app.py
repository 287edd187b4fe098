"""Your own Celery app (issue #11, 2): an application celery-fleet has never seen, built with
hatchling, a plain `Celery("textjobs")` configured from Celery's own environment variables,
queues and task names of its own (tests/sample_app), deployed with worker_app_source: tasks
of both kinds run, and `fleet status` and the post-deploy check know its workers."""

import json
import shlex

from .conftest import FAKE, VENV, as_service_user, deploy, lab_inventory_with
from .test_operate import fleet_status

OWN_APP = {"worker_app_source": "tests/sample_app", "worker_app_module": "textjobs.celery",
           "embedding_queues": ["tj-vectors"], "llm_queues": ["tj-completions"]}
SUBMIT = r"""
import json
from textjobs.celery import complete, vectorize
vectors = [vectorize.delay(f"own app {i}") for i in range(20)]
completions = [complete.delay(f"prompt {i}") for i in range(3)]
print(json.dumps([[r.get(timeout=120) for r in vectors], [r.get(timeout=300) for r in completions]]))
"""


def test_an_own_celery_app_runs_both_kinds_of_tasks_and_fleet_status_knows_it(lab, deployed,
                                                                              tmp_path):
    inventory = lab_inventory_with(tmp_path, {"cpu-small": OWN_APP, "gpu-box": OWN_APP})
    try:
        result = deploy(lab, inventory)
        assert "Check each worker is active" in result["output"]  # and it passed
        units = lab.ssh("gpu-box", "systemctl cat celery-embedding-worker@.service").stdout
        assert "-A textjobs.celery worker" in units and "--queues=tj-vectors " in units
        vectors, completions = json.loads(as_service_user(
            lab, "cpu-small", f"{VENV}/python -c {shlex.quote(SUBMIT)}", timeout=600)
            .strip().splitlines()[-1])
        assert vectors == [FAKE["vector_of"](f"own app {i}") for i in range(20)]
        assert completions == [FAKE["completion_of"](f"prompt {i}") for i in range(3)]
        status = fleet_status(lab, inventory, "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        queues = {q["queue"]: q["consumers"] for q in report["queues"]}
        assert queues["tj-vectors"] == 3 and queues["tj-completions"] == 2
        nodes = {r.get("node") for h in report["hosts"] for r in h["units"]} - {None}
        assert "embedding-1@cpu-small" in nodes and "llm-gpu0@gpu-box" in nodes
    finally:
        deploy(lab)  # the reference application again
