"""One fleet host, whole: what deploy.py runs for each host of the inventory. Its roles come
from its inventory groups (layout.GROUP_ROLES); what it no longer plays is retired."""

from __future__ import annotations

from celery_fleet import layout
from celery_fleet.fleetplan import PlannedHost

from .celery_client import celery_client, retire_client
from .embedding_worker import embedding_worker
from .fake_backend import fake_backend
from .flower import flower, retire_flower
from .llm_server import llm_server, retire_llm_server
from .llm_worker import llm_worker, retire_stale_llm_workers
from .rabbitmq_broker import celery_settings_module, rabbitmq_broker, rabbitmq_from_worker
from .redis_broker import broker_firewall, redis_broker
from .units import retire_worker, retire_worker_group, worker_group
from .worker_base import worker_base
from .worker_check import check_workers


def fleet_host(h: PlannedHost) -> None:
    changes = []
    if "broker" in h.roles:
        firewall = broker_firewall(h)
        changes += firewall
        if h.runs_redis:
            changes += redis_broker(h)
        if h.rabbitmq is not None:
            changes += rabbitmq_broker(h)
    if "broker" in h.roles and h.settings["flower"]:
        flower(h)
    else:
        retire_flower()
    if h.settings["fake_openai_backend"]:
        fake_backend(h)
    if "embedding" in h.roles or "llm" in h.roles:
        app_changes = worker_base(h) + celery_settings_module(h)
        changes += app_changes
        if "embedding" in h.roles:
            changes += embedding_worker(h, app_changes)
        if "llm" in h.roles:
            changes += retire_stale_llm_workers(h)  # then servers the plan drops
            changes += llm_server(h)  # before its workers: they call it
            changes += llm_worker(h, app_changes)
        worker_group(h)
        if h.rabbitmq is not None:
            rabbitmq_from_worker(h, layout.EMBEDDING_ENV if "embedding" in h.roles
                              else layout.LLM_ENV, changes)
        check_workers(h, changes)
    else:
        retire_worker_group()
    if "client" in h.roles:
        celery_settings_module(h)
        celery_client(h)
    else:
        retire_client()
    if "embedding" not in h.roles:
        retire_worker(layout.EMBEDDING_PREFIX)
    if "llm" not in h.roles:
        retire_worker(layout.LLM_PREFIX)
        retire_llm_server(h.settings["install_dir"])
