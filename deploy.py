"""celery-fleet: `pyinfra inventory/<yours>.py deploy.py`.

Dispatches by inventory group: brokers get Redis, embedding_workers the embedding worker,
llm_workers the LLM worker (a host may be in several). Every host is planned and every
inventory value validated first (celery_fleet/fleet.py): a bad value stops the run before any
host is changed.
"""

from pyinfra import host, inventory, logger, state

from celery_fleet.fleet import fleet_plans
from celery_fleet.layout import EMBEDDING_PREFIX, LLM_PREFIX
from celery_fleet.planview import plan_summary
from roles.embedding_worker import embedding_worker
from roles.fake_backend import fake_backend
from roles.flower import flower, retire_flower
from roles.llm_worker import llm_worker
from roles.redis_broker import redis_broker
from roles.units import retire_worker
from roles.worker_base import worker_base
from roles.worker_check import check_workers

this_host = fleet_plans(inventory, state).get(host.name)  # None: not in a fleet group

if this_host is not None:
    logger.info(f"    [{host.name}] plan: {plan_summary(this_host.plan)}")
    for warning in this_host.plan.warnings:
        logger.warning(f"    [{host.name}] {warning}")
    changes = []
    if "broker" in this_host.roles:
        changes += redis_broker(this_host)
    if "broker" in this_host.roles and this_host.settings["flower"]:
        flower(this_host)
    else:
        retire_flower()
    if this_host.settings["fake_openai_backend"]:
        fake_backend(this_host)
    if "embedding" in this_host.roles or "llm" in this_host.roles:
        app_changes = worker_base(this_host)
        changes += app_changes
        if "embedding" in this_host.roles:
            changes += embedding_worker(this_host, app_changes)
        if "llm" in this_host.roles:
            changes += llm_worker(this_host, app_changes)
        check_workers(this_host, changes)
    if "embedding" not in this_host.roles:
        retire_worker(EMBEDDING_PREFIX)
    if "llm" not in this_host.roles:
        retire_worker(LLM_PREFIX)
