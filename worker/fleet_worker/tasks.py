"""Tasks: embeddings against an OpenAI-compatible /v1/embeddings, generation against a local
OpenAI-compatible /v1/completions, and worker_info for checks."""

from __future__ import annotations

import os
import socket

import httpx

from .app import app, config

_client: httpx.Client | None = None
_client_pid: int | None = None


def http_client() -> httpx.Client:
    """One client per process (a prefork child must not share its parent's sockets), with a
    connection pool at least as large as the worker's concurrency."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        size = max(config.concurrency, 1)
        _client = httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0),
                               limits=httpx.Limits(max_connections=size,
                                                   max_keepalive_connections=size))
        _client_pid = os.getpid()
    return _client


@app.task(bind=True, name="fleet_worker.tasks.embed", autoretry_for=(httpx.TransportError,),
          retry_backoff=True, retry_jitter=True, max_retries=8)
def embed(self, texts: list[str]) -> list[list[float]]:
    headers = {"Authorization": f"Bearer {config.embedding_api_key}"} \
        if config.embedding_api_key else {}
    response = http_client().post(f"{config.embedding_api_url}/embeddings", headers=headers,
                                  json={"model": config.embedding_model, "input": texts})
    if response.status_code == 429 or response.status_code >= 500:
        retry_after = response.headers.get("Retry-After")
        countdown = float(retry_after) if retry_after else None
        raise self.retry(countdown=countdown, exc=RuntimeError(
            f"embeddings API answered {response.status_code}"))
    response.raise_for_status()
    data = sorted(response.json()["data"], key=lambda item: item["index"])
    return [item["embedding"] for item in data]


@app.task(bind=True, name="fleet_worker.tasks.generate", autoretry_for=(httpx.TransportError,),
          retry_backoff=True, retry_jitter=True, max_retries=5)
def generate(self, prompt: str, max_tokens: int = 128) -> str:
    response = http_client().post(f"{config.llm_api_url}/completions",
                                  json={"model": config.llm_model, "prompt": prompt,
                                        "max_tokens": max_tokens})
    if response.status_code == 429 or response.status_code >= 500:
        raise self.retry(exc=RuntimeError(f"completions API answered {response.status_code}"))
    response.raise_for_status()
    return response.json()["choices"][0]["text"]


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
