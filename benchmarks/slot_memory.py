"""Memory one task slot costs in an embedding worker process (issue #11, 7): where greenlets or
threads stop fitting the process's MemoryMax.

A real `celery worker` of the reference app, every slot busy at once (the fake API answers after
LATENCY_MS, so each task holds its HTTP request open), peak RSS of the process sampled while they
are in flight. Concurrency sweeps far past what plans choose (the RAM tiers give 8-64 a process;
the file-descriptor limit allows 5428).

    .venv/bin/python benchmarks/slot_memory.py            # about 3 minutes on 2 cores
    .venv/bin/python benchmarks/slot_memory.py --quick

Prints one line per run and the per-slot cost; celery_fleet/sizing.py cites the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from celery_fleet.bench import harness  # noqa: E402
from celery_fleet.layout import EMBEDDING_QUEUE  # noqa: E402

LATENCY_MS = 4000
SWEEP = [("gevent", c) for c in (1, 64, 256, 1024, 2048)] + [("threads", c) for c in
                                                              (1, 64, 256)]
QUICK = [("gevent", 1), ("gevent", 256), ("threads", 1), ("threads", 64)]


def peak_rss_while(pid: int, busy: threading.Event) -> list[float]:
    peak = [0.0]

    def sample():
        while not busy.is_set():
            peak[0] = max(peak[0], harness.tree_rss_mb(pid))
            time.sleep(0.1)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    return peak


def run(pool: str, concurrency: int, broker: str, api_url: str) -> dict:
    from fleet_worker.app import app
    from fleet_worker.tasks import embed

    app.control.purge()
    env = harness.worker_env(broker, api_url, "embedding", pool, concurrency)
    with harness.celery_worker(env, EMBEDDING_QUEUE, pool, concurrency) as process:
        embed.apply_async((["warm"],), queue=EMBEDDING_QUEUE).get(timeout=120)
        time.sleep(1)
        idle = harness.tree_rss_mb(process.pid)
        done = threading.Event()
        peak = peak_rss_while(process.pid, done)
        results = [embed.apply_async(([f"text {i}"],), queue=EMBEDDING_QUEUE)
                   for i in range(concurrency)]
        for result in results:
            result.get(timeout=600)
        done.set()
    per_slot_kb = (peak[0] - idle) * 1024 / concurrency if concurrency > 1 else 0
    return {"pool": pool, "concurrency": concurrency, "idle_mb": round(idle, 1),
            "peak_mb": round(peak[0], 1), "per_slot_kb": round(per_slot_kb)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(f"{'pool':<8} {'in flight':>9} {'idle MB':>8} {'peak MB':>8} {'KB/slot':>8}")
    with harness.local_redis() as broker, \
            harness.fake_backend(latency_ms=LATENCY_MS, capacity=100000) as api_url:
        # the app reads its broker from the environment when first imported (in run())
        os.environ["CELERY_BROKER_URL"] = os.environ["CELERY_RESULT_BACKEND"] = broker
        for pool, concurrency in QUICK if args.quick else SWEEP:
            r = run(pool, concurrency, broker, api_url)
            print(f"{r['pool']:<8} {r['concurrency']:>9} {r['idle_mb']:>8} {r['peak_mb']:>8} "
                  f"{r['per_slot_kb']:>8}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
