"""After a deploy: does each worker run with the pool and concurrency of its plan? (pure)"""

from __future__ import annotations

import json

from .render import POOL_IMPLEMENTATIONS


def compare_stats(workers: list[dict], hostname: str, stats_output: str) -> list[str]:
    """Problems found comparing `celery inspect stats --json` with the planned workers."""
    try:
        stats = json.loads(stats_output.strip().splitlines()[-1]) if stats_output.strip() else {}
    except json.JSONDecodeError:
        return [f"celery inspect stats answered something that is not JSON: "
                f"{stats_output.strip()[-200:]!r}"]
    problems = []
    for worker in workers:
        node = worker["node_prefix"] + hostname
        if node not in stats:
            problems.append(f"{worker['unit']}: worker {node} does not answer")
            continue
        pool_stats = stats[node].get("pool", {})
        pool = POOL_IMPLEMENTATIONS.get(pool_stats.get("implementation"),
                                        pool_stats.get("implementation"))
        concurrency = pool_stats.get("max-concurrency")
        if (pool, concurrency) != (worker["pool"], worker["concurrency"]):
            problems.append(f"{worker['unit']}: runs {pool} x{concurrency}, planned "
                            f"{worker['pool']} x{worker['concurrency']}")
    return problems
