"""Are embeddings slow because of the endpoint? Measure it from a worker host, with the
worker's own settings:

    sudo -u celery /usr/local/lib/celery-fleet/env-exec /etc/celery-fleet/embedding-worker.env \\
        /opt/celery-fleet/venv/bin/python -m fleet_worker.probe [--requests 40] [--concurrency N]

Sends embedding calls one at a time, then N at a time (default: the worker's concurrency),
and prints latency and throughput of each. Their ratio is how many requests the endpoint
really serves at once: near N, the endpoint keeps up and the worker is sized right; near 1,
it serves one at a time and more concurrency only queues (SIZING.md: such an endpoint makes
gevent 16 exactly as fast as solo). 429 answers are counted: the API's rate limit is then the
bound (set embedding_rate_limit_per_min). The calls bypass the fleet's rate limiter: keep
--requests small on a metered API.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import urllib3

from .config import from_environ


def measure(url: str, headers: dict, model: str, requests: int, concurrency: int) -> dict:
    http = urllib3.PoolManager(maxsize=concurrency, block=True, retries=False,
                               timeout=urllib3.Timeout(connect=5.0, read=60.0))

    def call(i: int) -> tuple[float, int]:
        started = time.monotonic()
        try:
            status = http.request("POST", url, body=json.dumps(
                {"model": model, "input": [f"celery-fleet probe {i}"]}).encode(),
                headers=headers).status
        except urllib3.exceptions.HTTPError:
            status = 0  # no answer: connection refused, reset, timeout
        return time.monotonic() - started, status

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(call, range(requests)))
    seconds = time.monotonic() - started
    latencies = sorted(t for t, status in answers if status == 200)
    return {
        "concurrency": concurrency, "requests": requests,
        "ok": len(latencies), "rate_limited": sum(1 for _, s in answers if s == 429),
        "failed": sum(1 for _, s in answers if s not in (200, 429)),
        "per_s": round(len(latencies) / seconds, 1) if seconds else 0.0,
        "p50_ms": round(statistics.median(latencies) * 1000) if latencies else None,
        "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))] * 1000)
        if latencies else None,
    }


def verdict(one: dict, many: dict) -> list[str]:
    """Pure: what the two measurements say."""
    if not one["ok"] or not many["ok"]:
        return [f"the endpoint did not answer ({one['failed'] + many['failed']} failed, "
                f"{one['rate_limited'] + many['rate_limited']} rate limited): check "
                "EMBEDDING_API_URL, the key, and that this host can reach it"]
    at_once = many["per_s"] / one["per_s"] if one["per_s"] else 0.0
    lines = [f"the endpoint serves about {at_once:.1f} requests at once "
             f"({many['per_s']} / {one['per_s']} requests/s)"]
    if many["rate_limited"]:
        lines.append(f"{many['rate_limited']} of {many['requests']} answered 429: the API's "
                     "rate limit is the bound; set embedding_rate_limit_per_min so the plan "
                     "sizes concurrency by it")
    elif at_once < many["concurrency"] * 0.5:
        lines.append(f"below the {many['concurrency']} this worker runs at once: requests "
                     "queue at the endpoint, more concurrency will not help; give the "
                     "endpoint more capacity (replicas, batch size) or add endpoints")
    else:
        lines.append(f"it keeps up with {many['concurrency']} at once: the endpoint is not "
                     f"the bottleneck (latency p50 {many['p50_ms']} ms)")
    return lines


def main(argv: list[str]) -> int:
    config = from_environ()
    parser = argparse.ArgumentParser(prog="python -m fleet_worker.probe",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=config.embedding_api_url,
                        help="API base URL (default: EMBEDDING_API_URL)")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=max(config.concurrency, 2))
    args = parser.parse_args(argv)
    if not args.url:
        print("no endpoint: run it with the worker's .env (see the module's docstring), or "
              "give --url", file=sys.stderr)
        return 2
    url = f"{args.url.rstrip('/')}/embeddings"
    headers = {"Content-Type": "application/json"}
    if config.embedding_api_key:
        headers["Authorization"] = f"Bearer {config.embedding_api_key}"
    print(f"endpoint {url}, model {config.embedding_model or '-'}")
    results = [measure(url, headers, config.embedding_model, max(args.requests // 2, 1), 1),
               measure(url, headers, config.embedding_model, args.requests, args.concurrency)]
    for r in results:
        print(f"{r['concurrency']:>3} at a time: {r['ok']}/{r['requests']} ok, "
              f"{r['per_s']} requests/s, p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms"
              + (f", {r['rate_limited']} rate limited" if r["rate_limited"] else "")
              + (f", {r['failed']} failed" if r["failed"] else ""))
    for line in verdict(*results):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
