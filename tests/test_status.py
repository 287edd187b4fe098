"""`fleet status`'s report (pure): every kind of difference from the plan is named."""

import pytest

from celery_fleet import status
from celery_fleet.sizing import Gpu, HostFacts, plan_host

THREADS = "celery.concurrency.thread:TaskPool"
PREFORK = "celery.concurrency.prefork:TaskPool"


def active(unit, restarts="0"):
    return {"Id": unit, "ActiveState": "active", "SubState": "running", "NRestarts": restarts,
            "MainPID": "42"}


def worker_host(name="w1", units=None, memory=None, gpus=()):
    plan = plan_host(name, HostFacts(8192, 2, tuple(Gpu(i, 24576) for i in range(len(gpus)))),
                     {}, ("embedding", "llm"))
    llm_unit = "celery-llm-worker@gpu0.service" if gpus else "celery-llm-worker@cpu.service"
    default_units = {u: active(u) for u in ("celery-embedding-worker@1.service", llm_unit,
                                            "celery-worker.service")}
    return status.HostReading(
        name, ("embedding", "llm"), plan, units=default_units if units is None else units,
        hostname=name,
        memory_mb=memory if memory is not None else {u: 60.0 for u in default_units},
        gpus=list(gpus))


def broker_host():
    return status.HostReading("b", ("broker",), None, units={
        u: active(u) for u in ("redis-server.service", "celery-fleet-redis-firewall.service")})


def fleet_of(*hosts, waiting=None, **overrides):
    workers = {}
    for h in hosts:
        workers[f"embedding-1@{h}"] = {"implementation": THREADS, "concurrency": 16, "active": 2,
                                       "reserved": 5, "queues": ["embeddings"], "pid": 1}
        workers[f"llm-cpu@{h}"] = {"implementation": PREFORK, "concurrency": 1, "active": 0,
                                   "reserved": 0, "queues": ["llm"], "pid": 2}
    fleet = {"workers": workers, "queues": waiting or {"embeddings": 0, "llm": 0},
             "unacked": 7, "redis": {"used_mb": 3.0, "maxmemory_mb": 2048}}
    fleet.update(overrides)
    return fleet


def test_a_fleet_as_planned_has_no_difference_and_says_so():
    report = status.build([broker_host(), worker_host()], fleet_of("w1"))
    assert report["differences"] == []
    row = report["hosts"][1]["units"][0]
    assert (row["runs"], row["plan"], row["active"], row["reserved"]) == \
        ("threads x16", "threads x16", 2, 5)
    text = status.format_report(report, "now")
    assert "everything runs as planned" in text and status.MARK not in text
    assert "60 MB of 6144 MB" in text


@pytest.mark.parametrize("change, expected", [
    (lambda h, f: h.units.pop("celery-llm-worker@cpu.service"),
     "w1 celery-llm-worker@cpu.service: not installed, planned to run: deploy"),
    (lambda h, f: h.units["celery-llm-worker@cpu.service"].update(ActiveState="failed",
                                                                   SubState="failed"),
     "w1 celery-llm-worker@cpu.service: failed (failed), planned to run"),
    (lambda h, f: f["workers"]["embedding-1@w1"].update(concurrency=8),
     "w1 celery-embedding-worker@1.service: runs threads x8, planned threads x16 (deploy again)"),
    (lambda h, f: f["workers"].pop("llm-cpu@w1"),
     "w1 celery-llm-worker@cpu.service: worker llm-cpu@w1 does not answer the broker"),
    (lambda h, f: h.units.update({"celery-embedding-worker@2.service":
                                  active("celery-embedding-worker@2.service")}),
     "w1 celery-embedding-worker@2.service: runs but is not in the plan (deploy again to "
     "retire it)"),
    (lambda h, f: h.memory_mb.update({"celery-embedding-worker@1.service": 5000.0}),
     "w1 celery-embedding-worker@1.service: uses 5000 MB, above its 4915 MB mark (of 6144 MB):"
     " it restarts warm after its tasks"),
    (lambda h, f: f["workers"].update({"embedding-1@old-host": f["workers"]["embedding-1@w1"]}),
     "worker embedding-1@old-host answers but is in no host's plan (a host left out of the "
     "inventory still runs it)"),
    (lambda h, f: f.update(queues={"embeddings": 0, "llm": 3}) or f["workers"].pop("llm-cpu@w1"),
     "queue llm: 3 task(s) waiting and no worker consumes it: they stay PENDING"),
    (lambda h, f: f.update(redis={"used_mb": 1900.0, "maxmemory_mb": 2048}),
     "redis: 1900.0 MB used of 2048 MB maxmemory: near full, it will refuse new tasks "
     "(noeviction)"),
    (lambda h, f: setattr(h, "problem", "the status command failed"),
     "w1: the status command failed"),
])
def test_each_difference_from_the_plan_is_named(change, expected):
    host, fleet = worker_host(), fleet_of("w1")
    change(host, fleet)
    report = status.build([broker_host(), host], fleet)
    assert expected in report["differences"]
    assert f"{status.MARK} " in status.format_report(report, "now")


def test_an_unreachable_host_and_an_unreachable_broker_are_differences():
    down = status.HostReading("w2", ("embedding",), None, reachable=False)
    report = status.build([worker_host(), down], {"fleet_problem": "ConnectionError: refused"})
    assert report["differences"] == ["w2: unreachable over SSH",
                                     "the broker cannot be asked: ConnectionError: refused"]
    # without the broker's answer, workers are not reported as silent one by one
    assert "unreachable" in status.format_report(report, "now")


def test_a_host_that_could_not_be_read_is_one_difference_not_a_list_of_dead_units():
    host = worker_host(units={}, memory={})
    host.problem = "cannot be read: SSH connection lost"
    report = status.build([host], fleet_of("w1"))
    assert report["differences"] == ["w1: cannot be read: SSH connection lost"]


def test_a_gpu_host_shows_its_gpus_and_a_gpu_that_disappeared():
    gpu = {"index": 0, "util_pct": 37, "memory_used_mb": 20100, "memory_total_mb": 24576,
           "processes": []}
    host = worker_host(gpus=[gpu])
    fleet = fleet_of()
    fleet["workers"] = {"embedding-1@w1": {"implementation": THREADS, "concurrency": 16,
                                           "active": 0, "reserved": 0,
                                           "queues": ["embeddings"], "pid": 1},
                        "llm-gpu0@w1": {"implementation": "celery.concurrency.thread:TaskPool",
                                        "concurrency": 4, "active": 1, "reserved": 0,
                                        "queues": ["llm"], "pid": 2}}
    report = status.build([host], fleet)
    assert report["differences"] == []
    assert "GPU 0: 37% busy, 20100 / 24576 MiB" in status.format_report(report, "now")
    host.gpus = [dict(gpu, index=1)]
    assert ("w1 celery-llm-worker@gpu0.service: pinned to GPU 0, which the host no longer shows"
            in status.build([host], fleet)["differences"])
    host.gpus, host.gpu_problem = [], "nvidia-smi exit 9: driver"
    assert ("w1: GPUs cannot be read: nvidia-smi exit 9: driver"
            in status.build([host], fleet)["differences"])


def test_watch_shows_how_memory_moved_since_the_first_reading():
    first = status.build([worker_host()], fleet_of("w1"))
    later = worker_host(memory={"celery-embedding-worker@1.service": 75.0,
                                "celery-llm-worker@cpu.service": 58.0})
    report = status.build([later], fleet_of("w1"), previous=first)
    rows = {r["unit"]: r for r in report["hosts"][0]["units"]}
    assert rows["celery-embedding-worker@1.service"]["memory_change_mb"] == 15.0
    assert rows["celery-llm-worker@cpu.service"]["memory_change_mb"] == -2.0
    assert "75 MB of 6144 MB (+15)" in status.format_report(report, "now")


def test_systemctl_show_blocks_are_parsed_per_unit():
    lines = ["Id=redis-server.service", "ActiveState=active", "SubState=running", "NRestarts=2",
             "", "Id=celery-embedding-worker@1.service", "ActiveState=inactive",
             "SubState=dead", "NRestarts=0"]
    units = status.parse_units(lines)
    assert units["redis-server.service"]["NRestarts"] == "2"
    assert units["celery-embedding-worker@1.service"]["ActiveState"] == "inactive"


def test_queue_lines_stay_aligned_with_an_applications_long_queue_names():
    report = status.build([broker_host(), worker_host()],
                          fleet_of("w1", waiting={"embeddings": 3, "tj-completions": 12}))
    lines = [line for line in status.format_report(report, "now").splitlines()
             if line.startswith("queue ")]
    assert len(lines) == 2 and len({line.index(" waiting") for line in lines}) == 1, lines


def test_the_inference_server_the_plan_runs_is_expected_and_checked():
    """Found walking the operator path: `fleet status` called a planned llama.cpp server
    "not in the plan"; it is the plan's, and a stopped one is a difference."""
    plan = plan_host("w1", HostFacts(8192, 2, llm_model_mb=100),
                     {"llm_model_path": "/m.gguf"}, ("embedding", "llm"))
    server = "celery-fleet-llm-server@cpu.service"
    units = {u: active(u) for u in ("celery-embedding-worker@1.service", server,
                                    "celery-llm-worker@cpu.service", "celery-worker.service")}
    reading = status.HostReading("w1", ("embedding", "llm"), plan, units=units, hostname="w1",
                                 memory_mb={})
    assert status.build([broker_host(), reading], fleet_of("w1"))["differences"] == []
    units[server].update(ActiveState="failed", SubState="failed")
    assert status.build([broker_host(), reading], fleet_of("w1"))["differences"] == [
        f"w1 {server}: failed (failed), planned to run"]


# ---- broker: rabbitmq (issue #14) ---------------------------------------------------------

NODES = ["rabbit@10.0.0.1", "rabbit@10.0.0.2", "rabbit@10.0.0.3"]


def rabbit_broker(name, redis=False):
    plan = plan_host(name, HostFacts(4096, 2), {"broker": "rabbitmq"}, ("broker",))
    if not redis:
        from dataclasses import replace
        plan = replace(plan, redis=None)
    units = ["rabbitmq-server.service", "celery-fleet-redis-firewall.service"]
    return status.HostReading(name, ("broker",), plan, units={
        u: active(u) for u in units + (["redis-server.service"] if redis else [])})


def rabbit_queue(name, ready=0, unacked=0, consumers=1, online=NODES):
    return {"name": name, "type": "quorum", "messages_ready": ready,
            "messages_unacknowledged": unacked, "consumers": consumers, "members": NODES,
            "online": online}


def rabbit_fleet(running=NODES, alarms=(), queues=None):
    return {**fleet_of("w1"), "queues": {}, "unacked": None, "redis": None,
            "rabbitmq_nodes": NODES,
            "rabbitmq": {"asked": "b1", "running_nodes": running, "alarms": list(alarms),
                         "queues": queues or [rabbit_queue("embeddings", 5, 3),
                                              rabbit_queue("llm", 0, 1),
                                              rabbit_queue("celery_delayed_0", consumers=0),
                                              rabbit_queue("embedding-1@w1.celery.pidbox"),
                                              rabbit_queue("celeryev.1234"),
                                              rabbit_queue("celery-fleet.dead-letter",
                                                           consumers=0)]}}


def test_a_healthy_rabbitmq_cluster_is_as_planned_and_shows_its_queues():
    hosts = [rabbit_broker("b1", redis=True), rabbit_broker("b2"), worker_host("w1")]
    report = status.build(hosts, rabbit_fleet())
    assert report["differences"] == []
    assert [(q["queue"], q["waiting"], q["unacked"], q["online"]) for q in report["queues"]] \
        == [("celery-fleet.dead-letter", 0, 0, 3), ("embeddings", 5, 3, 3), ("llm", 0, 1, 3)]
    assert report["unacked"] == 4
    text = status.format_report(report, "now")
    assert "rabbitmq: 3 of 3 node(s) running (asked b1), alarms: none" in text
    assert "embeddings: 3 of 3 replicas online, 3 unacknowledged" in text


def test_a_lost_node_an_alarm_a_minority_and_dead_letters_are_differences():
    two = NODES[:2]
    fleet = rabbit_fleet(running=two, alarms=[{"node": NODES[0], "resource": "memory"}],
                         queues=[rabbit_queue("embeddings", online=NODES[:1]),
                                 rabbit_queue("llm", 7, consumers=0, online=two),
                                 rabbit_queue("celery-fleet.dead-letter", 2, consumers=0)])
    differences = status.build([rabbit_broker("b1", redis=True), worker_host("w1")],
                               fleet)["differences"]
    assert differences[0] == ("rabbitmq node rabbit@10.0.0.3 is not running (asked b1): its "
                              "queues' replicas wait for it; 2 of 3 run")
    assert "rabbitmq alarm" in differences[1] and '"memory"' in differences[1]
    assert any("celery-fleet.dead-letter: 2 task(s) delivered 20 times" in d
               for d in differences)
    assert any(d.startswith("queue llm: 7 task(s) waiting and no worker consumes it")
               for d in differences)
    assert any(d.startswith("queue embeddings: 1 of 3 replicas online, no majority")
               for d in differences)
    # a broker that keeps no Redis is not missing one; a broker that cannot be asked is said
    assert status.expected_units(rabbit_broker("b2")) == [
        "celery-fleet-redis-firewall.service", "rabbitmq-server.service"]
    unasked = {**rabbit_fleet(), "rabbitmq_problem": "no broker was reached"}
    del unasked["rabbitmq"]
    assert status.build([worker_host("w1")], unasked)["differences"] == [
        "rabbitmq cannot be asked: no broker was reached"]


def test_a_unit_only_named_by_another_units_ordering_is_not_shown():
    """The firewall unit's Before= names both brokers' units: systemd lists the one not
    installed as not-found."""
    host = broker_host()
    host.units["rabbitmq-server.service"] = {"Id": "rabbitmq-server.service",
                                             "LoadState": "not-found", "ActiveState": "inactive",
                                             "SubState": "dead", "NRestarts": "0"}
    report = status.build([host, worker_host()], fleet_of("w1"))
    assert [r["unit"] for r in report["hosts"][0]["units"]] == [
        "redis-server.service", "celery-fleet-redis-firewall.service"]
