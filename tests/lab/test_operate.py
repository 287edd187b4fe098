"""After the deploy (issue #6): memory watch on real systemd hosts, `fleet status`."""

import json
import shlex
import subprocess
import sys
import time

from celery_fleet import layout

from .conftest import (FAKE, ROOT, VENV, as_service_user, collect, deploy, lab_inventory_with,
                       redis, wait_until_answers)
from .test_deploy import PLANNED

SUBMIT = r"""
import json
from fleet_worker.tasks import embed
print(json.dumps([embed.delay([f"memory {i}"]).id for i in range(COUNT)]))
"""


def unit_show(lab, host: str, unit: str, *properties: str) -> dict:
    out = lab.ssh(host, f"systemctl show {unit} " + " ".join(f"-p {p}" for p in properties))
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def test_a_worker_above_its_memory_limit_restarts_warm_and_loses_no_task(lab, deployed):
    host, unit = "cpu-small", "celery-embedding-worker@1.service"
    dropin = f"/run/systemd/system/{unit}.d"
    # a limit any worker is above: the watch must restart it once it ran tasks, not before
    lab.ssh(host, f"mkdir -p {dropin} && printf 'FLEET_MEMORY_RECYCLE_MB=20\\n"
                  f"FLEET_MEMORY_CHECK_S=1\\n' > /run/fleet-test-memory.env && printf "
                  f"'[Service]\\nEnvironmentFile=/run/fleet-test-memory.env\\n' > "
                  f"{dropin}/zz-test-memory.conf && systemctl daemon-reload && "
                  f"systemctl restart {unit}")
    try:
        before = unit_show(lab, host, unit, "NRestarts", "MainPID")
        time.sleep(4)
        assert unit_show(lab, host, unit, "MainPID") == {"MainPID": before["MainPID"]}
        script = SUBMIT.replace("COUNT", "200")
        ids = json.loads(as_service_user(lab, host, f"{VENV}/python -c '{script}'").strip()
                         .splitlines()[-1])
        deadline = time.monotonic() + 60
        while unit_show(lab, host, unit, "NRestarts")["NRestarts"] == before["NRestarts"]:
            assert time.monotonic() < deadline, "the worker was not restarted"
            time.sleep(0.5)
        assert collect(lab, ids, timeout=120) == [[FAKE["vector_of"](f"memory {i}")]
                                                  for i in range(200)]
        log = lab.ssh(host, f"journalctl -u {unit} --no-pager -o cat -n 300").stdout
        assert "above 20 MB after" in log and "warm restart" in log
        status = unit_show(lab, host, unit, "ActiveState", "ExecMainStatus")
        assert status["ActiveState"] == "active"
    finally:
        lab.ssh(host, f"rm -rf {dropin} /run/fleet-test-memory.env && systemctl daemon-reload "
                      f"&& systemctl restart {unit}")
        wait_until_answers(lab, host, f"embedding-1@{host}")


def fleet_status(lab, inventory="inventory/lab.py", *options):
    result = subprocess.run([sys.executable, "-m", "celery_fleet.cli", "status", inventory,
                             *options], cwd=ROOT, env=lab.env(), capture_output=True,
                            text=True, timeout=300)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_fleet_status_shows_the_fleet_running_as_planned(lab, deployed):
    result = fleet_status(lab, "inventory/lab.py", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["differences"] == []
    rows = {(h["name"], r.get("node", "").split("@")[0]): r
            for h in report["hosts"] for r in h["units"]}
    for host, nodes in PLANNED.items():
        for node, (pool, concurrency) in nodes.items():
            row = rows[(host, node)]
            assert row["state"] == "active (running)"
            assert row["runs"] == row["plan"] == f"{pool} x{concurrency}"
            assert 20 < row["memory_mb"] < row["memory_max_mb"]  # psutil on the host
    broker = next(h for h in report["hosts"] if h["name"] == "broker")
    assert [(r["unit"], r["state"]) for r in broker["units"]] == [
        ("redis-server.service", "active (running)"),
        ("celery-fleet-redis-firewall.service", "active (exited)")]
    assert {q["queue"]: q["consumers"] for q in report["queues"]} == {"embeddings": 3, "llm": 2}
    gpu_box = next(h for h in report["hosts"] if h["name"] == "gpu-box")
    assert [g["memory_total_mb"] for g in gpu_box["gpus"]] == [24576]
    text = fleet_status(lab).stdout
    assert "everything runs as planned" in text and "threads x16  plan threads x16" in text
    # --watch reads again and again (Ctrl-C stops it), with each worker's memory change
    watch = subprocess.run(["timeout", "--preserve-status", "-s", "INT", "20", sys.executable,
                            "-m", "celery_fleet.cli", "status", "inventory/lab.py", "--watch",
                            "1"],
                           cwd=ROOT, env=lab.env(), capture_output=True, text=True)
    assert watch.returncode == 0 and watch.stderr == "", watch.stderr
    assert watch.stdout.count("celery-fleet status, ") >= 2
    assert "MB of 4096 MB (+" in watch.stdout or "MB of 4096 MB (-" in watch.stdout


def test_fleet_status_marks_what_differs_from_the_plan(lab, deployed, tmp_path):
    # a plan this fleet was not deployed with: the status says what to do
    inventory = lab_inventory_with(tmp_path, {"cpu-small": {"embedding_concurrency": 12}})
    result = fleet_status(lab, inventory)
    assert result.returncode == 1
    assert ("cpu-small celery-embedding-worker@1.service: runs threads x8, planned threads x12 "
            "(deploy again)") in result.stdout

    # no LLM worker running, generations queued: they wait, and the status says why
    llm = {"cpu-small": "celery-llm-worker@cpu", "gpu-box": "celery-llm-worker@gpu0"}
    for host, unit in llm.items():
        lab.ssh(host, f"systemctl stop {unit}")
    try:
        script = ("import json; from fleet_worker.tasks import generate; "
                  "print(json.dumps([generate.delay(f'stuck {i}').id for i in range(3)]))")
        ids = json.loads(as_service_user(lab, "cpu-small", f"{VENV}/python -c {shlex.quote(script)}")
                         .strip().splitlines()[-1])
        # and a task sent to a queue nobody consumes, by a typo
        as_service_user(lab, "cpu-small", f"{VENV}/python -c " + shlex.quote(
            "from fleet_worker.tasks import embed; embed.apply_async([['x']], "
            "queue='embedings')"))
        result = fleet_status(lab)
        assert result.returncode == 1
        assert ("queue llm: 3 task(s) waiting and no worker consumes it: they stay PENDING"
                in result.stdout)
        assert ("queue embedings: 1 task(s) waiting and no worker consumes it: they stay "
                "PENDING" in result.stdout)
        assert ("cpu-small celery-llm-worker@cpu.service: inactive (dead), planned to run"
                in result.stdout)
    finally:
        for host, unit in llm.items():
            lab.ssh(host, f"systemctl start {unit}")
        redis(lab, "DEL", "embedings", "_kombu.binding.embedings",
              "_kombu.binding_permanent.embedings")
    assert collect(lab, ids, timeout=120) == [FAKE["completion_of"](f"stuck {i}")
                                              for i in range(3)]
    assert fleet_status(lab).returncode == 0


GET = r"""
import base64, sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    request.add_header("Authorization", "Basic " + base64.b64encode(sys.argv[2].encode()).decode())
try:
    answer = urllib.request.urlopen(request, timeout=10)
    print(answer.status); print(answer.read().decode())
except urllib.error.HTTPError as error:
    print(error.code)
"""


def http_get(lab, host, url, login=None) -> tuple[int, str]:
    args = f"{shlex.quote(url)}" + (f" {shlex.quote(login)}" if login else "")
    out = lab.ssh(host, f"python3 -c {shlex.quote(GET)} {args}").stdout
    status, _, body = out.partition("\n")
    return int(status), body


def test_flower_is_one_setting_away_private_and_protected(lab, deployed, tmp_path):
    import socket

    import pytest

    deploy(lab, lab_inventory_with(tmp_path, {"broker": {"flower": True}}))
    try:
        password = (ROOT / ".fleet-secrets" / "broker.flower_password").read_text().strip()
        url = f"http://{lab.ip('broker')}:5555"
        assert http_get(lab, "cpu-small", f"{url}/api/workers")[0] == 401  # no login, no data
        code, body = http_get(lab, "cpu-small", f"{url}/api/workers?refresh=1",
                              f"flower:{password}")
        assert code == 200 and set(json.loads(body)) == {
            f"{node}@{host}" for host, nodes in PLANNED.items() for node in nodes}
        # workers send task events now: Flower counts them for Prometheus
        task_id = as_service_user(lab, "cpu-small", f"{VENV}/python -c "
                                                    f"{shlex.quote(SEND_ONE)}").split()[-1]
        assert collect(lab, [task_id], 60) == [[FAKE["vector_of"]("flower")]]
        code, metrics = http_get(lab, "cpu-small", f"{url}/metrics", f"flower:{password}")
        assert code == 200 and 'flower_events_total{task="fleet_worker.tasks.embed",' \
                               'type="task-succeeded"' in metrics
        # bound to the private address only, closed to a machine outside the fleet
        listening = lab.ssh("broker", "ss -ltnH 'sport = :5555'").stdout.split()
        assert f"{lab.ip('broker')}:5555" in listening
        with pytest.raises(OSError):
            socket.create_connection((lab.ip("broker"), 5555), timeout=3).close()
        # the login is in no command line, no log, no world-readable file
        assert password not in lab.ssh("broker", "ps -eo args").stdout
        leaks = lab.ssh("broker", "journalctl --no-pager -o cat | grep -cF -- "
                                  f"{shlex.quote(password)} || true; find /etc /opt -xdev "
                                  "-type f -perm -o=r | xargs -r grep -lF -- "
                                  f"{shlex.quote(password)} || true").stdout.split()
        assert leaks == ["0"]
    finally:
        result = deploy(lab)  # flower: false again removes it
    assert "Remove Flower (no longer enabled) | Stop and disable Flower" in result["output"]
    assert lab.ssh("broker", "systemctl cat celery-fleet-flower.service",
                   check=False).returncode != 0
    assert "5555" not in lab.ssh("broker", "ss -ltnH").stdout


SEND_ONE = ("from fleet_worker.tasks import embed; r = embed.delay(['flower']); "
            "print(r.id)")


PROBE = f"/usr/bin/python3 {layout.PROBE} --requests 32 --concurrency 8"  # as the service user


def test_the_endpoint_probe_tells_a_slow_endpoint_from_a_busy_one(lab, deployed):
    # the lab's fake API serves everything at once: not the bottleneck
    out = as_service_user(lab, "cpu-small", PROBE, timeout=120)
    assert "32/32 ok" in out and "it keeps up with 8 at once" in out, out
    # the same API serving one request at a time: the probe says concurrency will not help
    lab.ssh("cpu-small", "systemd-run --unit=fleet-test-single-slot --property=DynamicUser=yes "
                         "/usr/bin/python3 /usr/local/lib/celery-fleet/fake-openai-server "
                         "--port 8099 --latency-ms 50 --capacity 1 && sleep 1")
    try:
        out = as_service_user(lab, "cpu-small", f"{PROBE} --url http://127.0.0.1:8099/v1",
                              timeout=120)
    finally:
        lab.ssh("cpu-small", "systemctl stop fleet-test-single-slot")
    assert "32/32 ok" in out and "below the 8 this worker runs at once" in out, out


SCALED_OUT = """
import os
from celery_fleet.lab import Lab
from celery_fleet.lab.inventory import inventory_groups

_groups = inventory_groups(Lab(os.environ["FLEET_LAB_INSTANCE"]).load_state())
brokers = _groups["brokers"]
celery_clients = _groups["celery_clients"]
embedding_workers = _groups["embedding_workers"] + _groups["brokers"]  # one host more
llm_workers = _groups["llm_workers"]
"""


def test_scaling_out_is_adding_a_host_to_a_group_and_deploying(lab, deployed, tmp_path):
    inventory = tmp_path / "scaled_out.py"
    inventory.write_text(SCALED_OUT)
    try:
        deploy(lab, str(inventory))
        report = json.loads(fleet_status(lab, str(inventory), "--json").stdout)
        assert report["differences"] == []
        assert {q["queue"]: q["consumers"] for q in report["queues"]}["embeddings"] == 4
        broker = {r["unit"]: r for h in report["hosts"] if h["name"] == "broker"
                  for r in h["units"]}
        assert broker["celery-embedding-worker@1.service"]["runs"] == "threads x16"  # 8 GB
    finally:
        deploy(lab)  # the broker leaves the group: its worker is retired
    report = json.loads(fleet_status(lab, "inventory/lab.py", "--json").stdout)
    assert report["differences"] == []  # no worker left behind on the broker
    assert {q["queue"]: q["consumers"] for q in report["queues"]}["embeddings"] == 3


def test_fleet_status_refuses_a_bad_inventory_in_one_clear_line(lab, deployed, tmp_path):
    inventory = lab_inventory_with(tmp_path, {"cpu-small": {"embedding_concurrency": -1}})
    result = fleet_status(lab, inventory)
    assert result.returncode == 2
    assert ("host 'cpu-small': embedding_concurrency=-1 is not accepted: a whole number >= 1"
            in result.stderr)
