"""Tasks: embeddings against an OpenAI-compatible /v1/embeddings, generation against a local
OpenAI-compatible /v1/completions, and worker_info for checks.

API calls that fail for a passing reason (connection error, timeout, 429, 5xx) are retried
with the delay the server asked for (Retry-After), else exponential backoff with jitter; a
task is acknowledged only once it finished (acks_late), so nothing is lost on the way.
"""

from __future__ import annotations

import json
import os
import socket

import redis
import urllib3

from .app import app, config
from .ratelimit import FleetRateLimit
from .retry import is_retryable, retry_delay

MAX_RETRIES = 12  # with backoff capped at 60 s: several minutes of an API's bad mood
RATE_LIMIT_KEY = "celery-fleet:ratelimit:embeddings"

_per_process: dict = {}


def _own(name: str, make):
    """One object per process (a prefork child must not share its parent's sockets)."""
    key = (name, os.getpid())
    if key not in _per_process:
        _per_process[key] = make()
    return _per_process[key]


def http_pool() -> urllib3.PoolManager:
    """Keeps as many connections per endpoint as tasks run at once, and makes a task wait for
    a free one rather than open more (requests' default pool of 10 drops the rest: "Connection
    pool is full"). urllib3 directly: httpx cost ~6 ms more CPU per task (fleet bench), which
    is what caps how many greenlets one process drives.

    A response may take as long as the task may run: a long generation on CPU is not cut
    short and retried, and on the threads pool, which enforces no time limit, it is the
    time limit."""
    size = max(config.concurrency, 1)
    return _own("http", lambda: urllib3.PoolManager(
        num_pools=4, maxsize=size, block=True, retries=False,
        timeout=urllib3.Timeout(connect=5.0, read=config.task_time_limit_s)))


def rate_limit() -> FleetRateLimit | None:
    if not config.embedding_rate_limit_per_s:
        return None
    return _own("ratelimit", lambda: FleetRateLimit(
        # Redis keeps the results whichever the broker (with RabbitMQ too): the bucket is there
        redis.Redis.from_url(config.result_backend, max_connections=max(config.concurrency, 1) + 2),
        RATE_LIMIT_KEY, config.embedding_rate_limit_per_s, config.embedding_rate_burst))


class RetryableAPIError(RuntimeError):
    """A failure that passes: retried."""


class APIError(RuntimeError):
    """The API refused the request itself: not retried."""


def _post(task, url: str, payload: dict, headers: dict | None = None) -> dict:
    try:
        response = http_pool().request(
            "POST", url, body=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", **(headers or {})})
    except urllib3.exceptions.HTTPError as error:  # connection refused, reset, timeout
        raise task.retry(exc=RetryableAPIError(f"{url}: {type(error).__name__}"),
                         countdown=retry_delay(task.request.retries), max_retries=MAX_RETRIES)
    if is_retryable(response.status):
        raise task.retry(exc=RetryableAPIError(f"{url} answered {response.status}"),
                         countdown=retry_delay(task.request.retries, response.headers),
                         max_retries=MAX_RETRIES)
    if response.status >= 400:  # a bad request: retrying will not help
        raise APIError(f"{url} answered {response.status}: {response.data[:300]!r}")
    return json.loads(response.data)


def bearer(api_key: str) -> dict:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@app.task(bind=True, name="fleet_worker.tasks.embed")
def embed(self, texts: list[str]) -> list[list[float]]:
    limiter = rate_limit()
    if limiter:
        limiter.acquire()
    body = _post(self, f"{config.embedding_api_url}/embeddings",
                 {"model": config.embedding_model, "input": texts},
                 bearer(config.embedding_api_key))
    return [item["embedding"] for item in sorted(body["data"], key=lambda item: item["index"])]


@app.task(bind=True, name="fleet_worker.tasks.generate")
def generate(self, prompt: str, max_tokens: int = 128) -> str:
    body = _post(self, f"{config.llm_api_url}/completions",
                 {"model": config.llm_model, "prompt": prompt, "max_tokens": max_tokens},
                 bearer(config.llm_api_key))
    return body["choices"][0]["text"]


@app.task(bind=True, name="fleet_worker.tasks.worker_info")
def worker_info(self) -> dict:
    """Which worker ran this task, and with what settings (for checks and troubleshooting)."""
    return {
        "node": self.request.hostname,
        "host": socket.gethostname(),
        "role": config.role,
        "pool": config.pool,
        "concurrency": config.concurrency,
        "llm_threads": config.llm_threads,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "pid": os.getpid(),
    }
