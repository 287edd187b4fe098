"""The Celery application: `celery -A fleet_worker.app worker -Q embeddings|llm ...`."""

from celery import Celery

from .config import from_environ

config = from_environ()

app = Celery("fleet_worker", broker=config.broker_url, backend=config.result_backend,
             include=["fleet_worker.tasks"])
app.conf.update(
    task_routes={
        "fleet_worker.tasks.embed": {"queue": "embeddings"},
        "fleet_worker.tasks.generate": {"queue": "llm"},
    },
    task_default_queue="embeddings",
    # a task is acknowledged after it ran: a worker killed mid-task leaves it queued
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=config.prefetch_multiplier,
    task_time_limit=config.task_time_limit_s,
    broker_transport_options={"visibility_timeout": config.visibility_timeout_s,
                              "max_connections": config.redis_connections},
    result_backend_transport_options={"visibility_timeout": config.visibility_timeout_s},
    redis_max_connections=config.redis_connections,
    result_expires=86400,
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
)
