"""The Celery application: `celery -A fleet_worker.app worker -Q embeddings|llm ...`."""

from celery import Celery

from .config import EMBEDDING_QUEUE, LLM_QUEUE, from_environ
from .memory import memory_watch

RESTORE_SWEEP_S = 10
RESTORE_LOCK_S = 30

config = from_environ()

# Redis's transport: a message handed to a worker waits in an unacked hash until the ack; one
# not acknowledged within visibility_timeout is delivered again.
REDIS_TRANSPORT_OPTIONS = {
    "visibility_timeout": config.visibility_timeout_s,
    "max_connections": config.redis_connections,
    # A worker that died (kill -9, OOM, power) leaves its unacknowledged messages in Redis;
    # any live worker re-queues those older than visibility_timeout when it sweeps. kombu
    # sweeps every 10 s x 10 by default: once per 10 s, a message comes back at most 10 s
    # after its visibility ran out, not 100 s (tests/lab/test_recovery.py).
    "unacked_restore_interval": RESTORE_SWEEP_S,
    "unacked_restore_throttle": 1,
    # Sweeping takes a Redis lock that expires after 300 s by default: a worker killed
    # while holding it (more likely now that every worker sweeps every 10 s) stops every
    # restore for 5 minutes (likely why one CI run waited over 300 s for a task after a
    # kill -9). A sweep takes milliseconds; 30 s is still far more than it needs.
    "unacked_mutex_expire": RESTORE_LOCK_S,
}
# RabbitMQ (broker: rabbitmq): the broker returns a consumer's unacknowledged deliveries when
# its connection drops; quorum queues; publisher confirms (templates/celery_fleet_rabbitmq.py.j2
# says the same for any application)
RABBITMQ_SETTINGS = {
    "broker_transport_options": {"confirm_publish": True},
    "task_default_queue_type": "quorum",
    "task_create_missing_queue_type": "quorum",
    "worker_detect_quorum_queues": True,
    "broker_connection_max_retries": None,
}

app = Celery("fleet_worker", broker=config.broker_url, backend=config.result_backend,
             include=["fleet_worker.tasks"])
app.conf.update(
    task_routes={
        "fleet_worker.tasks.embed": {"queue": EMBEDDING_QUEUE},
        "fleet_worker.tasks.generate": {"queue": LLM_QUEUE},
    },
    task_default_queue=EMBEDDING_QUEUE,
    # a task is acknowledged after it ran: a worker killed mid-task leaves it queued
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=config.prefetch_multiplier,
    task_time_limit=config.task_time_limit_s,
    broker_transport_options=REDIS_TRANSPORT_OPTIONS,
    result_backend_transport_options={"visibility_timeout": config.visibility_timeout_s},
    redis_max_connections=config.redis_connections,
    result_expires=86400,
    broker_connection_retry_on_startup=True,
    # A task that finishes while Redis restarts keeps trying to store its result (backoff up
    # to 10 s) instead of failing after it ran: the caller gets its answer.
    result_backend_always_retry=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    # Flower's task pages and its Prometheus metrics are built from these events
    worker_send_task_events=config.task_events,
    task_send_sent_event=config.task_events,
)

if config.broker_is_rabbitmq:
    app.conf.update(RABBITMQ_SETTINGS)

app.steps["worker"].add(memory_watch(config.memory_recycle_mb, config.memory_check_s))
