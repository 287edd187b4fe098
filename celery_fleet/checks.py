"""Does a worker run with the pool and concurrency of its plan? (pure)

One comparison, used after a deploy (roles/worker_check.py, from `celery inspect stats`) and
by `fleet status` (celery_fleet/status.py, from the workers the broker sees).
"""

from __future__ import annotations

import json

from .layout import POOL_IMPLEMENTATIONS, PlannedWorker


def pool_shape(pool: str | None, concurrency) -> str:
    """How a pool reads in every report: "gevent x16"."""
    return f"{pool} x{concurrency}"


def running_shape(implementation: str | None, concurrency) -> str:
    """The shape a worker reports (Celery's pool class), named as the plan names pools."""
    return pool_shape(POOL_IMPLEMENTATIONS.get(implementation, implementation or "?"),
                      concurrency)


def shape_difference(worker: PlannedWorker, implementation: str | None, concurrency
                     ) -> str | None:
    """"runs X, planned Y" when the worker runs another pool or concurrency, else None."""
    runs, planned = running_shape(implementation, concurrency), pool_shape(
        worker.pool, worker.concurrency)
    return None if runs == planned else f"runs {runs}, planned {planned}"


def compare_stats(workers: list[PlannedWorker], hostname: str, stats_output: str) -> list[str]:
    """Problems found comparing `celery inspect stats --json` with the planned workers."""
    try:
        stats = json.loads(stats_output.strip().splitlines()[-1]) if stats_output.strip() else {}
    except json.JSONDecodeError:
        return [f"celery inspect stats answered something that is not JSON: "
                f"{stats_output.strip()[-200:]!r}"]
    problems = []
    for worker in workers:
        node = worker.node_prefix + hostname
        if node not in stats:
            problems.append(f"{worker.unit}: worker {node} does not answer")
            continue
        pool = stats[node].get("pool", {})
        difference = shape_difference(worker, pool.get("implementation"),
                                      pool.get("max-concurrency"))
        if difference:
            problems.append(f"{worker.unit}: {difference}")
    return problems
