"""End-to-end: real tasks through the deployed fleet against the fake OpenAI API the lab runs
beside the workers (issue #4)."""

import json
import shlex

from .conftest import FAKE, VENV, as_service_user, collect, deploy, lab_inventory_with

WORKER_HOSTS = ("cpu-small", "gpu-box")

SEND = r"""
import json
from fleet_worker.tasks import embed, generate
embeddings = [embed.delay([f"document {i}"]) for i in range(EMBEDDINGS)]
generations = [generate.delay(f"prompt {i}") for i in range(GENERATIONS)]
print(json.dumps({"embeddings": [r.get(timeout=300) for r in embeddings],
                  "generations": [r.get(timeout=300) for r in generations]}))
"""


def send(lab, embeddings: int, generations: int) -> dict:
    script = SEND.replace("EMBEDDINGS", str(embeddings)).replace("GENERATIONS", str(generations))
    out = as_service_user(lab, "cpu-small", f"{VENV}/python -c '{script}'", timeout=600)
    return json.loads(out.strip().splitlines()[-1])


def backend(lab, host: str, path: str, payload: dict | None = None) -> dict:
    data = "None" if payload is None else repr(json.dumps(payload).encode())
    script = ("import json, urllib.request; r = urllib.request.Request("
              f"'http://127.0.0.1:8080{path}', data={data}, "
              "headers={'Content-Type': 'application/json'}); "
              "print(urllib.request.urlopen(r, timeout=10).read().decode())")
    return json.loads(lab.ssh(host, f"python3 -c {shlex.quote(script)}").stdout)


def test_200_embeddings_and_5_generations_complete_with_correct_results(lab, deployed):
    results = send(lab, 200, 5)
    assert results["embeddings"] == [[FAKE["vector_of"](f"document {i}")] for i in range(200)]
    assert results["generations"] == [FAKE["completion_of"](f"prompt {i}") for i in range(5)]


def test_a_429_storm_is_retried_not_lost(lab, deployed):
    before = {h: backend(lab, h, "/admin/stats") for h in WORKER_HOSTS}
    for host in WORKER_HOSTS:
        backend(lab, host, "/admin/storm", {"count": 40})
    results = send(lab, 100, 0)
    assert results["embeddings"] == [[FAKE["vector_of"](f"document {i}")] for i in range(100)]
    after = {h: backend(lab, h, "/admin/stats") for h in WORKER_HOSTS}
    refused = sum(after[h]["storm_429"] - before[h]["storm_429"] for h in WORKER_HOSTS)
    served = sum(after[h]["embeddings"] - before[h]["embeddings"] for h in WORKER_HOSTS)
    assert refused > 0  # the storm hit tasks, and they were retried until served
    assert served >= 100


ROLLING = r"""
import json, time
from fleet_worker.tasks import embed
results = [embed.delay([f"rolling {i}"]) for i in range(300)]
time.sleep(2)  # tasks queued and running when the deploy restarts the workers
print(json.dumps([r.id for r in results]))
"""


def restart_window(lab, host, unit):
    out = lab.ssh(host, f"systemctl show -p ActiveExitTimestampMonotonic "
                        f"-p ActiveEnterTimestampMonotonic --value {unit}").stdout.split()
    return int(out[1]), int(out[0])  # (stop began, start done), one kernel clock for the lab


def test_a_redeploy_restarts_host_by_host_and_loses_no_task(lab, deployed, tmp_path):
    ids = as_service_user(lab, "cpu-small", f"{VENV}/python -c '{ROLLING}'").strip()
    inventory = lab_inventory_with(tmp_path, {"cpu-small": {"embedding_concurrency": 6},
                                              "gpu-box": {"embedding_concurrency": 24}})
    try:
        deploy(lab, inventory)
        windows = sorted(restart_window(lab, h, "celery-embedding-worker@1.service")
                         for h in WORKER_HOSTS)
        assert windows[0][1] <= windows[1][0], f"restarts overlapped: {windows}"
        values = collect(lab, json.loads(ids), timeout=600)
        assert values == [[FAKE["vector_of"](f"rolling {i}")] for i in range(300)]
    finally:
        deploy(lab)
