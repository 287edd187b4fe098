"""The reference application with real processes on this machine: a private redis-server,
the fake OpenAI API and a real `celery worker` (threads and gevent). Seconds, not minutes."""

import json
import os
import runpy
import shutil
import threading
import time

import pytest

from celery_fleet.bench import harness

FAKE = runpy.run_path(str(harness.FAKE_SERVER))

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (apt-get install "
                                       "redis-server; .ci/run does)")


@pytest.fixture(scope="module")
def broker():
    with harness.local_redis() as url:
        os.environ["CELERY_BROKER_URL"] = url
        os.environ["CELERY_RESULT_BACKEND"] = url
        yield url


def test_fake_api_answers_like_openai_and_limits_its_rate():
    with harness.fake_backend(latency_ms=10, rate_limit_per_s=5, burst=2) as api:
        import urllib.error
        import urllib.request

        def post(texts):
            request = urllib.request.Request(
                api + "/embeddings", data=json.dumps({"input": texts}).encode(),
                headers={"Content-Type": "application/json"})
            return urllib.request.urlopen(request, timeout=5)

        body = json.loads(post(["a", "b"]).read())
        assert [d["embedding"] for d in body["data"]] == [FAKE["vector_of"]("a"),
                                                          FAKE["vector_of"]("b")]
        post(["c"])  # the burst of 2 is spent
        with pytest.raises(urllib.error.HTTPError) as refused:
            post(["d"])
        assert refused.value.code == 429
        assert refused.value.headers["Retry-After"] == "1"
        assert 0 < int(refused.value.headers["retry-after-ms"]) <= 200


def test_capacity_makes_requests_wait_their_turn():
    with harness.fake_backend(latency_ms=200, capacity=1) as api:
        import urllib.request

        def call():
            urllib.request.urlopen(urllib.request.Request(
                api + "/embeddings", data=b'{"input": "x"}',
                headers={"Content-Type": "application/json"}), timeout=10).read()

        started = time.monotonic()
        threads = [threading.Thread(target=call) for _ in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert time.monotonic() - started >= 0.8  # served one at a time
        assert harness.backend_call(api, "/admin/stats")["max_in_flight"] == 1


def test_the_fake_api_leaves_no_process_behind():
    """Its completion pool's processes outlived it once (16 after a bench run)."""
    import urllib.request

    import psutil

    me = psutil.Process()
    with harness.fake_backend(completion_cpu_ms=100, cpu_workers=2) as api:
        urllib.request.urlopen(urllib.request.Request(
            api + "/completions", data=b'{"prompt": "p"}',
            headers={"Content-Type": "application/json"}), timeout=30).read()
        (server,) = [c for c in me.children() if "fake_openai_server" in " ".join(c.cmdline())]
        pool = server.children(recursive=True)
        assert pool  # the completions ran in its process pool
    _, alive = psutil.wait_procs(pool, timeout=10)
    for process in alive:  # do not leave them behind when this fails
        process.kill()
    assert alive == []


def test_the_fleet_rate_limit_spaces_calls_across_processes(broker):
    import redis

    from fleet_worker.ratelimit import FleetRateLimit

    client = redis.Redis.from_url(broker)
    limiters = [FleetRateLimit(client, "test:bucket", rate_per_s=20) for _ in range(3)]
    started = time.monotonic()
    waits = [limiters[i % 3].acquire() for i in range(21)]
    elapsed = time.monotonic() - started
    assert waits[0] == 0
    assert 0.9 <= elapsed <= 1.5  # 20 calls after the first, at 20/s, whoever asks


@pytest.mark.parametrize("pool", ["threads", "gevent"])
def test_a_real_worker_runs_embeddings_and_survives_a_429_storm(broker, pool):
    from fleet_worker.tasks import embed

    with harness.fake_backend(latency_ms=20) as api:
        env = harness.worker_env(broker, api, "embedding", pool, 8)
        with harness.celery_worker(env, "embeddings", pool, 8, name="local"):
            harness.backend_call(api, "/admin/storm", {"count": 15})
            results = [embed.delay([f"text {i}"]) for i in range(40)]
            values = [r.get(timeout=120) for r in results]
        stats = harness.backend_call(api, "/admin/stats")
    assert values == [[FAKE["vector_of"](f"text {i}")] for i in range(40)]
    assert stats["storm_429"] == 15 and stats["embeddings"] == 40


def test_only_a_worker_that_grew_while_running_tasks_is_recycled():
    from fleet_worker.memory import should_recycle, tree_memory_mb
    assert should_recycle(900, 800, tasks=3)
    assert not should_recycle(700, 800, tasks=3)
    assert not should_recycle(900, 800, tasks=0)  # too big from its start: would loop
    assert not should_recycle(900, 0, tasks=3)  # no limit
    assert 5 < tree_memory_mb(os.getpid()) < 4096


@pytest.mark.parametrize("pool", ["gevent", "threads"])
def test_a_worker_above_its_memory_limit_restarts_warm_after_its_tasks(broker, pool):
    from fleet_worker.memory import EXIT_RECYCLE
    from fleet_worker.tasks import embed

    with harness.fake_backend(latency_ms=300) as api:
        # any worker is above 10 MB: the watch must still wait for a task to have run
        env = harness.worker_env(broker, api, "embedding", pool, 4, FLEET_MEMORY_RECYCLE_MB=10,
                                 FLEET_MEMORY_CHECK_S=0.2)
        with harness.celery_worker(env, "embeddings", pool, 4, name=f"memory-{pool}") as worker:
            time.sleep(3)
            assert worker.poll() is None  # no task yet: no restart loop
            results = [embed.delay([f"memory {i}"]) for i in range(6)]
            exit_status = worker.wait(timeout=60)  # after its first tasks: a warm shutdown
            log = worker.stderr.read()
    assert exit_status == EXIT_RECYCLE, log[-2000:]
    assert "warm restart" in log
    # the tasks it was running finished; the rest went back to the queue, unharmed
    with harness.fake_backend(latency_ms=10) as api2:
        env = harness.worker_env(broker, api2, "embedding", pool, 4)
        with harness.celery_worker(env, "embeddings", pool, 4, name=f"after-{pool}"):
            values = [r.get(timeout=60) for r in results]
    assert values == [[FAKE["vector_of"](f"memory {i}")] for i in range(6)]
