"""The sizing core against a table of host shapes: 1 to 128 cores, 2 GB to 1 TB, 0 to 8 GPUs."""

import pytest

from celery_fleet.settings import DEFAULTS, SettingsError, resolve
from celery_fleet.sizing import (Gpu, HostFacts, max_slots_per_process, plan_embedding,
                                 plan_host, plan_llm, plan_redis, slots_that_fit)

GB = 1024


def gpus(count, vram_gb):
    return tuple(Gpu(i, vram_gb * GB) for i in range(count))


def facts(ram_gb, cores, gpu_count=0, vram_gb=24):
    return HostFacts(int(ram_gb * GB), cores, gpus(gpu_count, vram_gb))


# host shape -> (embedding pool, concurrency per process, processes, memory max MB per process)
EMBEDDING_TABLE = [
    (facts(2, 1), ("threads", 4, 1, 1024)),
    (facts(3.5, 2), ("threads", 4, 1, 1792)),
    (facts(3.7, 1), ("threads", 8, 1, 3788)),  # a "4 GB" machine reporting 3.7 GB
    (facts(4, 1), ("threads", 8, 1, 4096)),
    (facts(7.5, 2), ("threads", 16, 1, 6144)),  # a "8 GB" machine
    (facts(8, 2), ("threads", 16, 1, 6144)),
    (facts(12, 4), ("threads", 16, 1, 6144)),
    # the tier's 32 past 1.5 x (200 + 11 ms assumed) / 11 ms = 29: two processes share it
    (facts(15.6, 8), ("threads", 16, 2, 4096)),  # a "16 GB" machine
    (facts(16, 1), ("threads", 16, 2, 4096)),  # one core: two processes take turns on it
    (facts(64, 16), ("threads", 16, 2, 4096)),
    (facts(1024, 128, 8, 80), ("threads", 16, 2, 4096)),
]


@pytest.mark.parametrize("host, expected", EMBEDDING_TABLE)
def test_embedding_by_ram_tier(host, expected):
    plan = plan_embedding(host, DEFAULTS)
    assert (plan.pool, plan.concurrency, plan.processes, plan.memory_max_mb) == expected
    assert plan.max_tasks_per_child == 100
    assert plan.reasons


@pytest.mark.parametrize("ram_gb, tier", [(3, 4), (4, 8), (8, 16), (16, 32), (512, 32)])
def test_the_tier_is_the_hosts_total_when_nothing_is_known_about_the_endpoint(ram_gb, tier):
    for cores in (1, 2, 4, 8, 64):
        for cpu in (None, 1, 3, 20):  # a measured CPU cost alone does not raise the tier
            plan = plan_embedding(facts(ram_gb, cores), dict(DEFAULTS, embedding_task_cpu_ms=cpu,
                                                             embedding_latency_ms=200))
            assert plan.total_concurrency <= tier + plan.processes - 1
            assert any("the tier is the most" in r for r in plan.reasons)


# (rate/min, latency ms, embedding hosts) -> in flight on a 16 GB, 4-core host
@pytest.mark.parametrize("rate, latency, hosts, expected", [
    (3000, 229, 1, 13),  # SIZING.md: 50/s x 0.229 s x 1.05 = 12.02 -> 13 (12 measured best)
    (3000, 200, 2, 6),   # the same limit shared by two hosts: 50/s x 0.211 s x 1.05 / 2
    (600, 200, 1, 3),
    (60, 50, 4, 1),      # never below one
    # a generous known limit goes past the tier, up to what 4 cores drive (3 x 211 / 11 = 58)
    (100000, 200, 1, 232),
])
def test_rate_limit_bounds_the_hosts_tasks_by_littles_law(rate, latency, hosts, expected):
    s = dict(DEFAULTS, embedding_rate_limit_per_min=rate, embedding_latency_ms=latency)
    assert plan_embedding(facts(16, 4), s, embedding_hosts=hosts).total_concurrency == expected


def test_rate_limit_without_latency_says_so_and_does_not_cap():
    plan = plan_embedding(facts(16, 4), dict(DEFAULTS, embedding_rate_limit_per_min=3000))
    assert plan.total_concurrency == 32
    assert any("without embedding_latency_ms" in r for r in plan.reasons)


# (endpoint concurrency, embedding hosts, latency, cpu, cores) -> (per process, processes)
@pytest.mark.parametrize("endpoint, hosts, latency, cpu, cores, expected", [
    # the case: 200 ms, 7 ms CPU, 2 cores: 64 x 207/200 = 67 -> past the tier of 32;
    # 67 x 7/207 = 2.3 cores busy: two processes a core
    (64, 1, 200, 7, 2, (17, 4)),
    (64, 4, 200, 7, 2, (17, 1)),     # shared by 4 hosts: 16 x 207/200 -> 17
    (4, 1, 200, None, 8, (5, 1)),    # a small endpoint: below the tier (4 x 211/200 -> 5)
    # light tasks: a core drives 3 x 203/3 = 203, a process 1.5 x 203/3 = 102; heavy: 3 x
    # 220/20 = 33 a core, 17 a process: up to two processes a core
    (1000, 1, 200, 3, 2, (102, 4)),
    (1000, 1, 200, 20, 2, (17, 4)),
    (1000, 1, 200, 20, 8, (17, 16)),
    (1000, 1, 2000, 20, 8, (64, 16)),  # a slow endpoint: 1010 in flight keep 10 cores busy
])
def test_a_known_endpoint_sizes_the_host_by_its_capacity_and_the_cpu_per_task(
        endpoint, hosts, latency, cpu, cores, expected):
    s = dict(DEFAULTS, embedding_endpoint_concurrency=endpoint, embedding_latency_ms=latency,
             embedding_task_cpu_ms=cpu)
    plan = plan_embedding(facts(16, cores), s, embedding_hosts=hosts)
    assert (plan.concurrency, plan.processes) == expected


def test_greenlets_per_process_follow_latency_over_cpu_not_a_fixed_cap():
    def per_process(latency, cpu):
        s = dict(DEFAULTS, embedding_endpoint_concurrency=100000, embedding_latency_ms=latency,
                 embedding_task_cpu_ms=cpu)
        return plan_embedding(facts(64, 1), s).concurrency
    assert per_process(200, 20) < per_process(200, 7) < per_process(200, 3)
    assert per_process(50, 7) < per_process(200, 7) < per_process(1000, 7)
    assert per_process(200, 3) > 32  # the old fixed cap


def test_the_memory_and_file_limits_cap_what_a_known_endpoint_allows():
    s = dict(DEFAULTS, embedding_endpoint_concurrency=100000, embedding_latency_ms=5000,
             embedding_task_cpu_ms=1)
    plan = plan_embedding(facts(16, 1), s)
    assert plan.concurrency == max_slots_per_process()
    assert any("fit its memory and files" in r for r in plan.reasons)
    small = plan_embedding(facts(16, 1), dict(s, embedding_memory_max_mb=256))
    assert small.concurrency == slots_that_fit("threads", 256) < 2000


@pytest.mark.parametrize("concurrency, cores, expected", [
    (64, 8, (22, 3)), (100, 8, (25, 4)), (33, 8, (17, 2)), (64, 1, (32, 2)), (32, 8, (16, 2)),
    (16, 8, (16, 1)),
])
def test_embedding_concurrency_is_the_hosts_total_split_across_processes(
        concurrency, cores, expected):
    s = dict(DEFAULTS, embedding_concurrency=concurrency)
    plan = plan_embedding(facts(32, cores), s)
    assert (plan.concurrency, plan.processes) == expected
    assert concurrency <= plan.total_concurrency < concurrency + plan.processes


def test_one_process_asked_for_gets_every_slot_asked_for():
    # the old rule halved this (1 process of 1500): embedding_concurrency is the host's total
    s = dict(DEFAULTS, embedding_concurrency=3000, embedding_processes=1)
    plan = plan_embedding(facts(16, 4), s)
    assert (plan.concurrency, plan.processes) == (3000, 1)


def test_explicit_embedding_overrides_win():
    s = dict(DEFAULTS, embedding_pool="threads", embedding_concurrency=12, embedding_processes=3,
             embedding_memory_max_mb=2000, embedding_max_tasks_per_child=7,
             embedding_rate_limit_per_min=60, embedding_latency_ms=100)
    plan = plan_embedding(facts(4, 2), s)
    assert (plan.pool, plan.concurrency, plan.processes, plan.memory_max_mb,
            plan.max_tasks_per_child) == ("threads", 4, 3, 2000, 7)


def test_a_slow_endpoint_needs_fewer_processes_for_the_same_greenlets():
    plan = plan_embedding(facts(32, 8), dict(DEFAULTS, embedding_latency_ms=2000))
    assert (plan.concurrency, plan.processes) == (32, 1)


def test_solo_embedding_pool_runs_one_at_a_time():
    plan = plan_embedding(facts(16, 4), dict(DEFAULTS, embedding_pool="solo"))
    assert (plan.concurrency, plan.processes) == (1, 1)


# host shape -> (device, pool, concurrency per instance, instances, threads)
LLM_TABLE = [
    (facts(2, 1), ("cpu", "prefork", 1, 1, 1)),
    (facts(4, 1), ("cpu", "prefork", 1, 1, 1)),
    (facts(16, 8), ("cpu", "prefork", 1, 1, 8)),
    (facts(1024, 128), ("cpu", "prefork", 1, 1, 128)),
    # VRAM x 0.9 - 8 GB model - 2 GB server runtime, in 2 GB generations (4096 tokens)
    (facts(16, 2, 1, 24), ("gpu", "threads", 4, 1, 2)),   # 24 GB: 21.6 - 10 = 11.6 GB -> 5 fit
    (facts(32, 8, 1, 16), ("gpu", "threads", 2, 1, 8)),   # 16 GB: 14.4 - 10 = 4.4 GB -> 2
    (facts(32, 8, 1, 14), ("gpu", "threads", 1, 1, 8)),   # 14 GB: 12.6 - 10 = 2.6 GB -> 1
    (facts(256, 64, 2, 24), ("gpu", "threads", 4, 2, 32)),
    (facts(1024, 128, 8, 80), ("gpu", "threads", 4, 8, 16)),
]


@pytest.mark.parametrize("host, expected", LLM_TABLE)
def test_llm_plan(host, expected):
    plan, warnings = plan_llm("h", host, DEFAULTS)
    assert (plan.device, plan.pool, plan.concurrency, len(plan.instances),
            plan.threads) == expected
    assert warnings == []


def test_each_gpu_gets_its_own_pinned_instance():
    plan, _ = plan_llm("h", facts(256, 64, 4, 80), DEFAULTS)
    assert [(i.name, i.gpu_index) for i in plan.instances] == [
        ("gpu0", 0), ("gpu1", 1), ("gpu2", 2), ("gpu3", 3)]


def test_a_bigger_model_leaves_fewer_generations_per_gpu():
    s = dict(DEFAULTS, llm_model_vram_mb=14 * GB)
    plan, _ = plan_llm("h", facts(64, 8, 1, 24), s)  # 21.6 - 14 - 2 = 5.6 GB -> 2
    assert plan.concurrency == 2
    # a longer context: each generation's KV cache doubles, one fits
    plan, _ = plan_llm("h", facts(64, 8, 1, 24), dict(s, llm_context_size=8192))
    assert plan.concurrency == 1


def test_gpus_too_small_for_the_model_fall_back_to_cpu_with_a_warning():
    plan, warnings = plan_llm("h", facts(32, 8, 2, 8), dict(DEFAULTS))  # 7.2 GB < 8 GB model
    assert plan.device == "cpu" and plan.concurrency == 1
    assert len(warnings) == 2 and "cannot hold the model" in warnings[0]
    # 12 GB: 10.8 - 8 GB model - 2 GB runtime leaves less than one 2 GB generation
    plan, warnings = plan_llm("h", facts(32, 8, 1, 12), dict(DEFAULTS))
    assert plan.device == "cpu" and "GPU 0 (12288 MB) cannot hold" in warnings[0]


def test_a_failed_gpu_detection_gives_a_cpu_plan_and_a_warning():
    host = HostFacts(16 * GB, 4, (), gpu_problem="nvidia-smi exit 9: couldn't communicate")
    plan, warnings = plan_llm("h", host, DEFAULTS)
    assert plan.device == "cpu"
    assert warnings == ["GPU detection failed (nvidia-smi exit 9: couldn't communicate): "
                        "planning for CPU"]


def test_llm_overrides_win():
    plan, _ = plan_llm("h", facts(16, 8), dict(DEFAULTS, llm_concurrency=2, llm_pool="solo"))
    assert (plan.pool, plan.concurrency) == ("solo", 1)
    plan, _ = plan_llm("h", facts(16, 8), dict(DEFAULTS, llm_concurrency=2))
    assert (plan.concurrency, plan.threads) == (2, 4)  # one BLAS thread set per task
    plan, _ = plan_llm("h", facts(64, 8, 2, 24), dict(DEFAULTS, llm_concurrency=3,
                                                         llm_threads=2))
    assert [(i.concurrency, i.threads) for i in plan.instances] == [(3, 2), (3, 2)]


def test_llm_worker_memory_is_planned_and_overridable():
    assert plan_llm("h", facts(16, 8), DEFAULTS)[0].memory_max_mb == 1024
    assert plan_llm("h", facts(1, 1), DEFAULTS)[0].memory_max_mb == 512  # half a small host
    assert plan_llm("h", facts(64, 8, 2, 24), DEFAULTS)[0].memory_max_mb == 1024
    plan, _ = plan_llm("h", facts(16, 8), dict(DEFAULTS, llm_memory_max_mb=20000))
    assert plan.memory_max_mb == 20000  # a worker app that loads the model in-process


def test_memory_watch_restarts_warm_before_the_kernel_reclaims_or_kills():
    from celery_fleet.sizing import memory_high_mb, memory_recycle_mb
    assert memory_recycle_mb(1000) == 800 < memory_high_mb(1000) == 900 < 1000


@pytest.mark.parametrize("pool", ["gevent", "threads"])
def test_greenlets_or_threads_for_cpu_inference_are_refused(pool):
    with pytest.raises(SettingsError) as error:
        plan_llm("cpu-small", facts(4, 1), dict(DEFAULTS, llm_pool=pool))
    message = str(error.value)
    assert "host 'cpu-small'" in message and f"llm_pool='{pool}'" in message
    assert "prefork, solo" in message


def test_prefork_on_a_gpu_is_refused():
    with pytest.raises(SettingsError, match="llm_pool='prefork'.*threads, solo"):
        plan_llm("g", facts(16, 2, 1, 24), dict(DEFAULTS, llm_pool="prefork"))


@pytest.mark.parametrize("ram_gb, shared, expected_mb", [
    (8, False, 4096), (8, True, 2048), (2, False, 1024), (1024, False, 524288), (0.2, False, 102),
])
def test_redis_maxmemory_from_the_brokers_ram(ram_gb, shared, expected_mb):
    plan = plan_redis(facts(ram_gb, 2), DEFAULTS, shares_with_workers=shared)
    assert plan.maxmemory_mb == max(64, expected_mb)
    assert plan.maxmemory_policy == "noeviction"


def test_inventory_facts_win_over_detection():
    detected = facts(4, 1)
    plan = plan_host("h", detected, {"ram_mb": 65536, "cores": 16, "gpus": [24576, 24576]})
    assert plan.facts.ram_mb == 65536 and plan.facts.cores == 16
    assert plan.embedding.total_concurrency == 32
    assert plan.llm.device == "gpu" and len(plan.llm.instances) == 2
    no_gpu = plan_host("h", facts(16, 4, 1, 24), {"gpus": []})
    assert no_gpu.llm.device == "cpu"


def test_plan_host_only_plans_the_roles_of_the_host():
    plan = plan_host("b", facts(8, 2), {}, roles=("broker",))
    assert plan.embedding is None and plan.llm is None
    assert plan.redis.maxmemory_mb == 4096


def test_plan_json_has_the_documented_keys():
    out = plan_host("h", facts(4, 1), {}).to_json()
    assert {"pool", "concurrency", "processes", "memory_max_mb",
            "max_tasks_per_child"} <= set(out["embedding"])
    assert {"pool", "concurrency", "instances", "threads"} <= set(out["llm"])
    assert {"maxmemory_mb"} <= set(out["redis"])
    assert (out["embedding"]["pool"], out["embedding"]["concurrency"]) == ("threads", 8)
    assert (out["llm"]["pool"], out["llm"]["concurrency"], out["llm"]["instances"]) == (
        "prefork", 1, 1)


@pytest.mark.parametrize("data, key, accepted", [
    ({"embedding_concurrency": -1}, "embedding_concurrency", "a whole number >= 1"),
    ({"embedding_concurrency": "8"}, "embedding_concurrency", "a whole number >= 1"),
    ({"embedding_pool": "eventlet"}, "embedding_pool", "one of gevent, threads, prefork, solo"),
    ({"embedding_rate_limit_per_min": 0}, "embedding_rate_limit_per_min", "> 0"),
    ({"llm_pool": "asyncio"}, "llm_pool", "on CPU one of prefork, solo"),
    ({"gpus": [512]}, "gpus", "each >= 1024"),
    ({"ram_mb": True}, "ram_mb", "a whole number of MB >= 512"),
    ({"redis_port": 70000}, "redis_port", "a port number 1-65535"),
    ({"embedding_concurency": 8}, "embedding_concurency", "did you mean embedding_concurrency?"),
    ({"llm_treads": 8}, "llm_treads", "did you mean llm_threads?"),
])
def test_bad_values_name_host_key_value_and_what_is_accepted(data, key, accepted):
    with pytest.raises(SettingsError) as error:
        resolve("cpu-small", data)
    message = str(error.value)
    assert message.startswith(f"host 'cpu-small': {key}=")
    assert accepted in message
    assert repr(list(data.values())[0]) in message


def test_pyinfra_and_lab_keys_are_not_settings_and_pass():
    resolve("h", {"ssh_user": "deploy", "_sudo": True, "lab_cores": 2, "ssh_hostname": "x"})


@pytest.mark.parametrize("in_flight, cpu, cores, processes", [
    (32, 11, 2, 2),   # the default on 2 cores: 1.7 cores busy, split by what one process drives
    (32, 11, 1, 2),   # one core, 1.7 busy: two processes take turns on it
    (16, 11, 1, 1),   # 0.8 of a core: one process
    (214, 1.9, 2, 4),  # light tasks the endpoint allows: 1.95 of 2 cores busy, two a core
    (170, 2, 2, 2),   # 1.7 cores (84 %): split by what one process drives
])
def test_a_host_whose_tasks_keep_every_core_busy_runs_two_processes_a_core(
        in_flight, cpu, cores, processes):
    s = dict(DEFAULTS, embedding_concurrency=in_flight, embedding_task_cpu_ms=cpu)
    plan = plan_embedding(facts(16, cores), s)
    assert plan.processes == processes
    assert any("so none idles" in r for r in plan.reasons) == (processes == 2 * cores)


def test_two_processes_a_core_never_outnumber_the_tasks_or_the_memory_budget():
    # CPU-heavy tasks, an endpoint that takes 8 at once: 20 in flight would keep 12 of 8 cores
    # busy, but 16 processes would round each share up to 2 (32 in flight, past the endpoint)
    s = dict(DEFAULTS, embedding_endpoint_concurrency=8, embedding_latency_ms=20,
             embedding_task_cpu_ms=30)
    plan = plan_embedding(facts(32, 8), s)
    assert (plan.processes, plan.concurrency, plan.total_concurrency) == (10, 2, 20)
    # 2 GB, 2 cores: a budget of 1024 MB holds two processes of 512 MB, not four
    s = dict(DEFAULTS, embedding_concurrency=40, embedding_task_cpu_ms=20)
    small = plan_embedding(facts(2, 2), s)
    assert small.processes == 2 and small.processes * small.memory_max_mb <= 1024
