"""fleet tune's core (pure): counters, probe and journal in; measured settings, evidence,
refusals and the group_data file out. The lab test (tests/lab/test_tune.py) runs it for real."""

import pytest

from celery_fleet import tune
from celery_fleet.settings import DEFAULTS, resolve
from celery_fleet.sizing import HostFacts, plan_embedding, plan_host

W = tune.WorkerCounters


def probe(concurrency, per_s, ok=40, rate_limited=0, failed=0, p50=200):
    return {"concurrency": concurrency, "requests": ok + rate_limited + failed, "ok": ok,
            "rate_limited": rate_limited, "failed": failed, "per_s": per_s, "p50_ms": p50,
            "p95_ms": p50 + 20}


def test_cpu_per_task_is_cpu_over_tasks_between_two_readings_of_the_same_processes():
    before = {"embedding-1@a": W("embedding-1@a", 10.0, 1000, 11),
              "embedding-2@a": W("embedding-2@a", 20.0, 3000, 12),
              "embedding-1@b": W("embedding-1@b", 5.0, 100, 13)}
    after = {"embedding-1@a": W("embedding-1@a", 13.5, 1500, 11),
             "embedding-2@a": W("embedding-2@a", 23.5, 3500, 12),
             # restarted in between (another pid): its counters started again, left out
             "embedding-1@b": W("embedding-1@b", 0.5, 10, 99)}
    ms, tasks, cpu_s = tune.cpu_per_task_ms(before, after, set(after))
    assert (round(ms, 3), tasks, round(cpu_s, 3)) == (7.0, 1000, 7.0)
    assert tune.cpu_per_task_ms(before, after, {"embedding-1@b"}) == (0.0, 0, 0.0)


def test_too_few_tasks_are_refused_with_how_much_is_needed():
    measured = tune.Measured()
    tune.cpu_values(9.0, 50, 0.45, 60, 2, measured)
    assert not measured.values
    assert measured.refusals == [
        "the embedding workers did 50 tasks in 60 s: the CPU per task needs at least 200; run "
        "fleet tune while tasks flow, or with a longer --window (at this pace about 288 s)"]
    enough = tune.Measured()
    tune.cpu_values(7.04, 1000, 7.04, 60, 2, enough)
    assert enough.values == {"embedding_task_cpu_ms": 7.0} and not enough.refusals
    assert "7.0 CPU-s for 1000 tasks in 60 s on 2 host(s)" in enough.evidence[0]


def test_an_endpoint_that_keeps_up_gives_its_latency_and_a_lower_bound_of_its_capacity():
    measured = tune.Measured()
    tune.endpoint_values(probe(1, 4.9, ok=12, p50=203), probe(64, 300.0, p50=210), measured)
    assert measured.values == {"embedding_latency_ms": 203,
                               "embedding_endpoint_concurrency": 61}
    assert "it kept up, so it serves at least that many" in measured.evidence[-1]


def test_a_busy_endpoint_gives_the_capacity_it_really_has():
    measured = tune.Measured()
    tune.endpoint_values(probe(1, 10.0, ok=12, p50=100), probe(64, 80.0, p50=800), measured)
    assert measured.values["embedding_endpoint_concurrency"] == 8
    assert "kept up" not in measured.evidence[-1]


def test_a_rate_limited_probe_gives_no_capacity_and_points_at_the_rate_limit():
    measured = tune.Measured()
    tune.endpoint_values(probe(1, 5.0, ok=12), probe(64, 50.0, rate_limited=30), measured)
    assert "embedding_endpoint_concurrency" not in measured.values
    assert "give embedding_rate_limit_per_min" in measured.evidence[-1]


def test_an_endpoint_that_does_not_answer_is_a_refusal():
    measured = tune.Measured()
    tune.endpoint_values(probe(1, 0.0, ok=0, failed=12), probe(64, 0.0, ok=0, failed=40),
                         measured)
    assert measured.refusals and not measured.values
    assert "needs at least 20" in measured.refusals[0]


JOURNAL = [
    "Task fleet_worker.tasks.embed[6f1c0a4e-1d2b-4c3a-9e8f-0a1b2c3d4e5f] succeeded in "
    "0.2134s: [[0.1, 0.2]]",
    "Task myapp.embed[0b1c0a4e-1d2b-4c3a-9e8f-0a1b2c3d4e5f] succeeded in 0.25s: None",
    "Task myapp.embed[1b1c0a4e-1d2b-4c3a-9e8f-0a1b2c3d4e5f] retry: Retry in 1s: "
    "RetryableAPIError('http://x/v1/embeddings answered 429')",
    "Task myapp.embed[2b1c0a4e-1d2b-4c3a-9e8f-0a1b2c3d4e5f] retry: Retry in 2s: "
    "RetryableAPIError('http://x/v1/embeddings: ConnectTimeoutError')",
    "Task myapp.embed[3b1c0a4e-1d2b-4c3a-9e8f-0a1b2c3d4e5f] raised unexpected: "
    "APIError('answered 400')",
    "celery@x ready.",
]


def test_the_journal_gives_runtimes_retries_429s_and_failures():
    summary = tune.parse_journal(JOURNAL)
    assert summary.runtimes_s == [0.2134, 0.25]
    assert (summary.retries, summary.retries_429, summary.failed) == (2, 1, 1)
    assert tune.runtime_evidence("embedding tasks", summary) == (
        "embedding tasks: 2 tasks, runtime p50 232 ms, p95 250 ms; 2 retries (1 after a 429), "
        "1 failed")


def test_the_written_file_holds_the_values_and_the_evidence_and_is_valid_group_data():
    measured = tune.Measured({"embedding_task_cpu_ms": 7.0, "embedding_latency_ms": 203,
                              "embedding_endpoint_concurrency": 61},
                             ["CPU per embedding task 7.0 ms: 7.0 CPU-s for 1000 tasks"])
    text = tune.group_data_text(measured, "inventory/prod.py", "2026-11-23 14:02 UTC")
    namespace: dict = {}
    exec(compile(text, "embedding_workers.py", "exec"), namespace)
    values = {k: v for k, v in namespace.items() if not k.startswith("_")}
    assert values == measured.values
    assert "fleet tune inventory/prod.py` on 2026-11-23 14:02 UTC" in namespace["__doc__"]
    assert "- CPU per embedding task 7.0 ms: 7.0 CPU-s for 1000 tasks" in namespace["__doc__"]
    resolve("h", values)  # every value is a valid setting


def test_hosts_whose_inventory_sets_a_measured_key_are_named():
    lines = tune.set_by_the_inventory({"a": {"embedding_latency_ms": 250}, "b": {}},
                                      {"embedding_latency_ms": 203, "embedding_task_cpu_ms": 7})
    assert lines == ["embedding_latency_ms is set in the inventory for a: those hosts keep "
                     "their value; remove it there for the measured 203 to apply"]


def test_the_tuned_values_change_the_plan_as_the_measurement_says():
    facts = HostFacts(16384, 2)
    before = plan_embedding(facts, DEFAULTS)
    after = plan_embedding(facts, dict(DEFAULTS, embedding_task_cpu_ms=3.6,
                                       embedding_latency_ms=203,
                                       embedding_endpoint_concurrency=120))
    assert before.total_concurrency == 32
    # ~123 in flight at 3.6 ms keep 2.1 cores busy: two processes a core
    assert after.total_concurrency > 100 and after.processes == 4


def llm_plan(ram_gb=16, cores=8, gpus=(), data=None):
    return plan_host("h", HostFacts(ram_gb * 1024, cores, gpus), data or {}, ("llm",))


def journal(runtimes):
    return tune.JournalSummary(runtimes_s=list(runtimes))


@pytest.mark.parametrize("runtimes, waiting, expected", [
    ([2.0] * 30, {"llm": 5}, "CPU inference scales out, add hosts to llm_workers"),
    ([2.0] * 5, {}, None),  # idle most of the window: nothing to say
])
def test_llm_report_on_cpu(runtimes, waiting, expected):
    plan = llm_plan()
    lines = tune.llm_report("h", plan, plan_settings(), journal(runtimes), 60, waiting, waiting)
    assert lines[0].startswith(f"h: {len(runtimes)} generations in 60 s on 1 slot(s) (cpu, "
                               "cpu x1), p50 2.00 s")
    assert (lines[1:] == []) if expected is None else (expected in lines[1])


def test_llm_report_names_more_than_one_generation_at_once_on_cpu():
    # cores split between them (with llama.cpp servers: one instance of 1 each)
    for data in ({"llm_concurrency": 2}, {"llm_concurrency": 2, "llm_model_ram_mb": 500,
                                          "llm_model_host_path": "/srv/m.gguf"}):
        plan = llm_plan(data=data)
        lines = tune.llm_report("h", plan, plan_settings(), journal([4.0] * 10), 60, {}, {})
        assert "on 2 slot(s)" in lines[0]
        assert "2 generations at once of 4 thread(s): more generations a second" in lines[1]
    # more threads than cores: every generation slower
    plan = llm_plan(data={"llm_concurrency": 2, "llm_threads": 8})
    lines = tune.llm_report("h", plan, plan_settings(), journal([4.0] * 10), 60, {}, {})
    assert "2 generations at once x 8 thread(s) on 8 cores" in lines[1]
    assert "try llm_threads=4 or llm_concurrency=1" in lines[1]
    # one thread each already, more at once than cores: fewer at once, not fewer threads
    plan = llm_plan(cores=2, data={"llm_concurrency": 4, "llm_threads": 1})
    lines = tune.llm_report("h", plan, plan_settings(), journal([4.0] * 10), 60, {}, {})
    assert "4 generations at once x 1 thread(s) on 2 cores" in lines[1]
    assert "try llm_concurrency=2 or llm_concurrency=1" in lines[1]


def test_llm_report_on_a_busy_gpu_points_at_concurrency_and_gpus():
    from celery_fleet.sizing import Gpu
    plan = llm_plan(gpus=(Gpu(0, 24576),))
    lines = tune.llm_report("h", plan, plan_settings(), journal([1.0] * 240), 60,
                            {"llm": 3}, {"llm": 9})
    assert "gpu0 x4" in lines[0] and "busy 100%" in lines[0]
    assert "higher llm_concurrency" in lines[1]


def test_no_generation_is_nothing_to_judge():
    plan = llm_plan()
    assert tune.llm_report("h", plan, plan_settings(), journal([]), 60, {}, {}) == [
        "h: no generation finished in 60 s: nothing to judge"]


def plan_settings():
    return resolve("h", {})
