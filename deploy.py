"""celery-fleet: `pyinfra inventory/<yours>.py deploy.py`.

Dispatches by inventory group: brokers get Redis, embedding_workers the embedding worker,
llm_workers the LLM worker (a host may be in several). Every host is planned and every
inventory value validated first (celery_fleet/fleet.py): a bad value stops the run before any
host is changed.
"""

from pyinfra import host, inventory, logger, state

from celery_fleet.fleet import fleet_plans
from celery_fleet.planview import plan_summary
from roles.embedding_worker import embedding_worker
from roles.fake_backend import fake_backend
from roles.llm_worker import llm_worker
from roles.redis_broker import redis_broker
from roles.units import EMBEDDING_PREFIX, LLM_PREFIX, retire_worker
from roles.worker_base import worker_base
from roles.worker_check import check_workers

plans = fleet_plans(inventory, state)
plan = plans.get(host.name)

if plan is not None:
    logger.info(f"    [{host.name}] plan: {plan_summary(plan.plan)}")
    for warning in plan.plan.warnings:
        logger.warning(f"    [{host.name}] {warning}")
    changes = []
    if "broker" in plan.roles:
        changes += redis_broker(plan, list(plan.fleet_addresses))
    if plan.settings["fake_openai_backend"]:
        fake_backend(plan)
    if "embedding" in plan.roles or "llm" in plan.roles:
        app_changes = worker_base(plan)
        changes += app_changes
        if "embedding" in plan.roles:
            changes += embedding_worker(plan, app_changes)
        if "llm" in plan.roles:
            changes += llm_worker(plan, app_changes)
        check_workers(plan, changes)
    if "embedding" not in plan.roles:
        retire_worker(EMBEDDING_PREFIX)
    if "llm" not in plan.roles:
        retire_worker(LLM_PREFIX)
