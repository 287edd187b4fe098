"""broker: rabbitmq on the lab (issue #14): three brokers in a cluster of quorum queues, a
worker host and a producer host; what the Redis fleet's reliability tests do (tests/lab/
test_recovery.py), and the loss of a whole broker machine. Nothing may be lost: every task
completes with its right result; tasks that ran twice are reported (acks late allows it).

Its own lab, brought up once for the module on each release: Debian 12's RabbitMQ 3.10
(instance "rabbit") and Debian 13's 4.0 (instance "rabbit13"): TEST_LABS in the lab plugin.
benchmarks/broker_faults.py repeats these faults (10 runs) and prints the counts.
"""

from __future__ import annotations

import json
import shlex

import pytest

from celery_fleet.lab import load
from celery_fleet.lab.inventory import inventory_text
from celery_fleet.lab.pytest_plugin import bring_up, lab_suites, own_lab_ids, phase, take_down

from .conftest import ROOT, deploy

pytestmark = pytest.mark.lab

HOSTS = ("b1:ram=2G,cores=1,roles=broker b2:ram=2G,cores=1,roles=broker "
         "b3:ram=2G,cores=1,roles=broker w1:ram=4G,cores=2,roles=embedding+llm "
         "app:ram=1G,cores=1,roles=client")
BROKERS = ("b1", "b2", "b3")
WORKERS = ("w1",)
DATA = {"broker": "rabbitmq",
        # slow enough that tasks are surely running when the fault strikes
        "fake_openai_latency_ms": 400, "fake_openai_completion_cpu_ms": 3000}


@pytest.fixture(scope="module", params=lab_suites(), ids=own_lab_ids("rabbit"))
def rabbit(request, tmp_path_factory):
    running = bring_up(request.param, "rabbit", HOSTS)
    inventory = tmp_path_factory.mktemp("rabbit") / "inventory_rabbitmq.py"
    inventory.write_text(inventory_text(DATA))
    running.inventory = str(inventory)
    yield running
    take_down(running)


@pytest.fixture(scope="module")
def deployed_rabbit(rabbit, tmp_path_factory):
    """An operator's fleet that ran on Redis switches to RabbitMQ with tasks still queued:
    deployed with Redis on b1 first, its workers stopped, 40 + 2 tasks sent; then deployed
    with broker: rabbitmq (three brokers). The deploy moves the tasks Redis held."""
    redis_inventory = tmp_path_factory.mktemp("redis") / "inventory_redis_first.py"
    redis_inventory.write_text(inventory_text({**DATA, "broker": "redis"}, brokers=["b1"]))
    with phase(rabbit.suite, f"{rabbit.instance}: first deploy (Redis)"):
        deploy(rabbit, str(redis_inventory))
    rabbit.ssh("w1", "systemctl stop celery-worker")
    ids = load.submit(rabbit, "w1", "queued-in-redis", 40, 2)
    result = deploy(rabbit, rabbit.inventory)
    result["moved"] = load.results_by_deadline(rabbit, "w1", ids, timeout=300)
    return result


def ctl(lab, host: str, command: str) -> str:
    return lab.ssh(host, f"rabbitmqctl -q {command}", timeout=60).stdout


def running_nodes(lab, host: str) -> list[str]:
    status = json.loads(ctl(lab, host, "cluster_status --formatter json"))
    return sorted(status["running_nodes"])


def first_broker(lab, host: str) -> str:
    """The broker this host connects to first (the head of its failover list)."""
    env = lab.ssh(host, "cat /etc/celery-fleet/embedding-worker.env").stdout
    url = next(line for line in env.splitlines() if line.startswith("CELERY_BROKER_URL="))
    address = url.split("@", 1)[1].split(":", 1)[0]
    return next(name for name in BROKERS if lab.ip(name) == address)


def test_tasks_queued_in_redis_are_moved_to_rabbitmq_when_the_fleet_switches(
        rabbit, deployed_rabbit):
    assert deployed_rabbit["moved"] == load.expected("queued-in-redis", 40, 2)
    # nothing is left in Redis's queues; Redis keeps the results
    left = load.as_service_user(rabbit, "w1", f"{load.VENV}/python -c " + shlex.quote(
        "import os, redis; r = redis.Redis.from_url(os.environ['CELERY_RESULT_BACKEND']); "
        "print(r.llen('embeddings'), r.llen('llm'))"))
    assert left.split() == ["0", "0"]


def test_the_cluster_is_formed_and_a_second_deploy_changes_nothing(rabbit, deployed_rabbit):
    nodes = sorted(f"rabbit@{rabbit.ip(b)}" for b in BROKERS)
    for broker in BROKERS:
        assert running_nodes(rabbit, broker) == nodes
    queues = ctl(rabbit, "b1", "list_queues -p celery-fleet name type policy --no-table-headers")
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in queues.splitlines()}
    for queue in ("embeddings", "llm"):
        assert rows[queue] == ["quorum", "celery-fleet-quorum"], rows
    assert rows["celery-fleet.dead-letter"][0] == "quorum"
    users = ctl(rabbit, "b1", "list_users --no-table-headers")
    assert [line.split("\t")[0] for line in users.splitlines()] == ["celery-fleet"]  # no guest
    # AMQP and the cluster's port on the private address only; Redis (results) on b1 only
    listening = rabbit.ssh("b2", "ss -ltnH").stdout
    assert f"{rabbit.ip('b2')}:5672 " in listening and "0.0.0.0:5672" not in listening
    assert ":6379 " not in listening
    # the fleet's secrets never reach pyinfra's output
    for name in ("b1.rabbitmq_password", "b1.erlang_cookie"):
        secret = (ROOT / ".fleet-secrets" / name).read_text().strip()
        assert secret not in deployed_rabbit["output"]
    # each worker and producer has every broker, starting at its own
    client = rabbit.ssh("app", "cat /etc/celery-fleet-client.env").stdout
    assert client.count("amqp://celery-fleet:") == 3 and "CELERY_CONFIG_MODULE=" in client
    again = deploy(rabbit, rabbit.inventory)
    assert again["changed"] == 0, again["output"][-3000:]


def status_report(lab) -> tuple[int, dict]:
    from .test_operate import fleet_status

    result = fleet_status(lab, lab.inventory, "--json")
    return result.returncode, json.loads(result.stdout)


def test_fleet_status_knows_the_cluster_its_queues_and_the_workers(rabbit, deployed_rabbit):
    code, report = status_report(rabbit)
    assert (code, report["differences"]) == (0, [])
    assert report["rabbitmq"]["running_nodes"] == sorted(f"rabbit@{rabbit.ip(b)}"
                                                         for b in BROKERS)
    queues = {q["queue"]: q for q in report["queues"]}
    assert queues["embeddings"]["online"] == 3 and queues["embeddings"]["consumers"] == 1
    units = {(h["name"], r["unit"]) for h in report["hosts"] for r in h["units"]}
    assert ("b2", "rabbitmq-server.service") in units and ("b2", "redis-server.service") \
        not in units and ("b1", "redis-server.service") in units


# Debian 12's own Celery (5.2) on the producer host, a plain app configured from the
# environment: the settings module declares the fleet's queues as quorum queues for it too
SUBMIT = r"""
import json
from celery import Celery
app = Celery()
vector = app.send_task("fleet_worker.tasks.embed", args=[["from the app host"]],
                       queue="embeddings")
text = app.send_task("fleet_worker.tasks.generate", args=["from the app host"], queue="llm")
print(json.dumps([vector.get(timeout=120), text.get(timeout=300)]))
"""


def test_a_producer_with_debians_celery_submits_to_the_quorum_queues(rabbit, deployed_rabbit):
    rabbit.ssh("app", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install "
                      "-y -q --no-install-recommends python3-celery python3-redis", timeout=600)
    out = rabbit.ssh("app", "set -a; . /etc/celery-fleet-client.env; set +a; "
                            f"python3 -c {shlex.quote(SUBMIT)}", timeout=600).stdout
    vector, text = json.loads(out.strip().splitlines()[-1])
    assert vector == [load.FAKE["vector_of"]("from the app host")]
    assert text == load.FAKE["completion_of"]("from the app host")


def test_kill_9_of_workers_under_load_loses_no_task(rabbit, deployed_rabbit, capsys):
    """RabbitMQ hands a consumer's unacknowledged deliveries back the moment its connection
    drops: unlike Redis (a message popped and not yet recorded is gone), nothing is lost."""
    units = ("celery-embedding-worker@1.service", "celery-llm-worker@cpu.service")

    def kill():
        for unit in units:
            rabbit.ssh("w1", f"kill -9 {load.main_pid(rabbit, 'w1', unit)}")

    result = load.under_load(rabbit, WORKERS, "killed", kill)
    with capsys.disabled():
        print("\n    " + result.line("RabbitMQ, kill -9 of 2 workers"))
    assert (result.lost, result.wrong) == ([], [])
    assert result.twice <= 8 + 4 + 1  # at most what the dead workers held (their prefetch)


def test_a_broker_machine_lost_under_load_loses_no_task_and_rejoins(rabbit, deployed_rabbit,
                                                                     capsys):
    """The power of the broker the worker is connected to (and where its queues' leaders
    are) is cut while tasks flow: the worker fails over to the next broker, the queues elect
    a new leader among the two left, every task completes. Powered on, the node rejoins."""
    victim = first_broker(rabbit, "w1")
    assert victim != "b1", "the test cuts a broker that does not keep Redis (the results)"
    result = load.under_load(rabbit, WORKERS, "power-cut", lambda: rabbit.lab.power_cut(victim))
    with capsys.disabled():
        print("\n    " + result.line(f"RabbitMQ, power cut of {victim}"))
    assert (result.lost, result.wrong) == ([], [])
    others = [b for b in BROKERS if b != victim]
    assert running_nodes(rabbit, others[0]) == sorted(f"rabbit@{rabbit.ip(b)}" for b in others)
    # fleet status names the lost node (and asks another broker)
    code, report = status_report(rabbit)
    assert code == 2 and any(f"rabbitmq node rabbit@{rabbit.ip(victim)} is not running" in d
                             for d in report["differences"]), report["differences"]
    # the fleet keeps consuming with one broker down
    fresh = load.under_load(rabbit, WORKERS, "one-down", lambda: None, 150, 1)
    assert (fresh.lost, fresh.wrong) == ([], [])

    rabbit.lab.power_on(victim)
    rabbit.ssh(victim, "rabbitmqctl -q await_startup --timeout 120", timeout=150)
    nodes = sorted(f"rabbit@{rabbit.ip(b)}" for b in BROKERS)
    assert running_nodes(rabbit, victim) == nodes
    members = ctl(rabbit, victim, "list_queues -p celery-fleet name online --no-table-headers")
    online = {line.split("\t")[0]: line.split("\t")[1] for line in members.splitlines()}
    assert online["embeddings"].count("rabbit@") == 3, online


def test_a_rolling_restart_of_the_brokers_under_load_loses_no_task(rabbit, deployed_rabbit,
                                                                   capsys):
    def restart_each():
        for broker in BROKERS:
            rabbit.ssh(broker, "systemctl restart rabbitmq-server", timeout=180)

    result = load.under_load(rabbit, WORKERS, "rolling", restart_each)
    with capsys.disabled():
        print("\n    " + result.line("RabbitMQ, rolling restart of 3 brokers"))
    assert (result.lost, result.wrong) == ([], [])


def test_a_redeploy_that_restarts_the_workers_under_load_loses_no_task(rabbit, deployed_rabbit,
                                                                       tmp_path, capsys):
    """A new plan (another concurrency) rolls over the workers while tasks flow: warm
    shutdown, the rest go back to the queue."""
    changed = tmp_path / "inventory_changed.py"
    changed.write_text(inventory_text({**DATA, "embedding_concurrency": 6}))
    outcome = {}
    result = load.under_load(rabbit, WORKERS, "redeploy",
                             lambda: outcome.update(deploy(rabbit, str(changed))))
    with capsys.disabled():
        print("\n    " + result.line("RabbitMQ, redeploy with tasks flowing"))
    assert outcome["changed"] > 0
    assert (result.lost, result.wrong) == ([], [])
    deploy(rabbit, rabbit.inventory)
