"""Your application submits tasks (issue #11, 1): a host in the celery_clients group reaches
the broker and finds it with Celery's own variables; a host in no group is refused, unless
broker_allowed_networks names it."""

import json
import shlex

from .conftest import FAKE, deploy

# The lab's app host has nothing of celery-fleet's but the env file: Debian's own Celery, as
# an operator's web server might have it, and a plain app configured from the environment.
SUBMIT = r"""
import json
from celery import Celery
app = Celery()  # CELERY_BROKER_URL, CELERY_RESULT_BACKEND from the environment
vector = app.send_task("fleet_worker.tasks.embed", args=[["from the app host"]],
                       queue="embeddings")
text = app.send_task("fleet_worker.tasks.generate", args=["from the app host"], queue="llm")
print(json.dumps([vector.get(timeout=120), text.get(timeout=300)]))
"""
ONLY_WORKERS = """
import os
from celery_fleet.lab import Lab
from celery_fleet.lab.inventory import inventory_groups

_groups = inventory_groups(Lab(os.environ["FLEET_LAB_INSTANCE"]).load_state())
brokers = [(name, dict(data, broker_allowed_networks=NETWORKS)) for name, data in
           _groups["brokers"]]
embedding_workers = _groups["embedding_workers"]
llm_workers = _groups["llm_workers"]
"""


def reaches_redis(lab) -> bool:
    return lab.ssh("app", "timeout 3 bash -c '</dev/tcp/broker/6379'", check=False) \
        .returncode == 0


def test_a_client_host_submits_both_kinds_of_tasks_and_gets_the_results(lab, deployed):
    assert lab.ssh("app", "stat -c '%a %U' /etc/celery-fleet-client.env").stdout.split() == \
        ["600", "root"]
    lab.ssh("app", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                   "--no-install-recommends python3-celery python3-redis", timeout=600)
    out = lab.ssh("app", "set -a; . /etc/celery-fleet-client.env; set +a; "
                         f"python3 -c {shlex.quote(SUBMIT)}", timeout=600).stdout
    vector, text = json.loads(out.strip().splitlines()[-1])
    assert vector == [FAKE["vector_of"]("from the app host")]
    assert text == FAKE["completion_of"]("from the app host")


def test_a_host_in_no_group_is_refused_unless_an_allowed_network_names_it(lab, deployed,
                                                                         tmp_path):
    inventory = tmp_path / "only_workers.py"
    try:
        assert reaches_redis(lab)
        inventory.write_text(ONLY_WORKERS.replace("NETWORKS", "[]"))
        deploy(lab, str(inventory))
        assert not reaches_redis(lab)
        inventory.write_text(ONLY_WORKERS.replace("NETWORKS", repr([f"{lab.ip('app')}/32"])))
        deploy(lab, str(inventory))
        assert reaches_redis(lab)
    finally:
        deploy(lab)
    assert reaches_redis(lab)
