"""Configuration from the environment: the .env files celery-fleet renders for each worker.

Every value has its variable here, once; nothing else reads os.environ.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Redis re-delivers a task not acknowledged within visibility_timeout: it must exceed the
# longest task (SIZING.md: the default of 1 h re-runs longer tasks).
DEFAULT_TASK_TIME_LIMIT_S = 1800
# as celery_fleet/sizing.py (clocks that differ between hosts): tests/test_agreement.py
VISIBILITY_MARGIN_S = 60
REDIS_CONNECTIONS_SPARE = 10  # the consumer, heartbeats, control commands
# The queues the deploy's units consume (celery_fleet/layout.py names the same:
# tests/test_agreement.py)
EMBEDDING_QUEUE = "embeddings"
LLM_QUEUE = "llm"


@dataclass(frozen=True)
class WorkerConfig:
    broker_url: str
    result_backend: str
    role: str  # "embedding", "llm", or "" for a client
    pool: str
    concurrency: int
    prefetch_multiplier: int
    task_time_limit_s: int
    embedding_api_url: str
    embedding_api_key: str
    embedding_model: str
    embedding_rate_limit_per_s: float  # shared by the whole fleet; 0: none
    embedding_rate_burst: int
    llm_api_url: str
    llm_api_key: str
    llm_model: str
    llm_threads: int

    @property
    def redis_connections(self) -> int:
        """kombu's Redis pool defaults to 10 connections: 32 greenlets acking late at once
        failed with "Couldn't ack ... MaxConnectionsError" (fleet bench), leaving messages to
        be delivered again. Every task slot may ack and store a result at the same moment."""
        return 2 * self.concurrency + REDIS_CONNECTIONS_SPARE

    @property
    def broker_is_rabbitmq(self) -> bool:
        """amqp://: RabbitMQ's quorum queues (docs/BROKERS.md); else Redis."""
        return self.broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))

    visibility_timeout_s: int = 0
    memory_recycle_mb: int = 0  # 0: no memory watch (fleet_worker/memory.py)
    memory_check_s: float = 30
    task_events: bool = False  # for Flower (the inventory's `flower: true`)

    def __post_init__(self):
        if not self.visibility_timeout_s:  # the deploy sets one value for the fleet
            object.__setattr__(self, "visibility_timeout_s",
                               self.task_time_limit_s + VISIBILITY_MARGIN_S)


def from_environ(env=os.environ) -> WorkerConfig:
    # Celery's own variables (Celery reads them too, celery/app/utils.py): the deploy writes
    # them into every worker's and client's .env file
    broker = env.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    return WorkerConfig(
        broker_url=broker,
        result_backend=env.get("CELERY_RESULT_BACKEND", broker),
        role=env.get("FLEET_ROLE", ""),
        pool=env.get("FLEET_POOL", ""),
        concurrency=int(env.get("FLEET_CONCURRENCY", "1")),
        prefetch_multiplier=int(env.get("FLEET_PREFETCH_MULTIPLIER", "1")),
        task_time_limit_s=int(env.get("FLEET_TASK_TIME_LIMIT_S", DEFAULT_TASK_TIME_LIMIT_S)),
        embedding_api_url=env.get("EMBEDDING_API_URL", ""),
        embedding_api_key=env.get("EMBEDDING_API_KEY", ""),
        embedding_model=env.get("EMBEDDING_MODEL", ""),
        embedding_rate_limit_per_s=float(env.get("EMBEDDING_RATE_LIMIT_PER_S", "0") or 0),
        embedding_rate_burst=int(env.get("EMBEDDING_RATE_BURST", "1") or 1),
        llm_api_url=env.get("LLM_API_URL", ""),
        llm_api_key=env.get("LLM_API_KEY", ""),
        llm_model=env.get("LLM_MODEL", ""),
        llm_threads=int(env.get("FLEET_LLM_THREADS", "1")),
        visibility_timeout_s=int(env.get("FLEET_VISIBILITY_TIMEOUT_S", "0") or 0),
        memory_recycle_mb=int(env.get("FLEET_MEMORY_RECYCLE_MB", "0") or 0),
        memory_check_s=float(env.get("FLEET_MEMORY_CHECK_S", "30") or 30),
        task_events=env.get("FLEET_TASK_EVENTS", "0") == "1",
    )
