"""celery-fleet: `pyinfra inventory/<yours>.py deploy.py`.

Every host is planned and every inventory value validated first (celery_fleet/fleet.py): a bad
value stops the run before any host is changed. Then each fleet host gets what its inventory
groups say (roles/host.py): brokers Redis, embedding_workers the embedding worker, llm_workers
the LLM worker (a host may be in several). A host in `retired` loses all of ours
(roles/retire.py).
"""

from pyinfra import host, inventory, logger, state

from celery_fleet.fleet import fleet_plans, is_retired
from celery_fleet.planview import plan_summary
from celery_fleet.settings import resolve
from roles.host import fleet_host
from roles.retire import retire_host

this_host = fleet_plans(inventory, state).get(host.name)  # None: not in a fleet group

if this_host is None and is_retired(host):
    logger.info(f"    [{host.name}] retired: removing every unit, file and user of celery-fleet")
    retire_host(resolve(host.name, host.data.dict()))  # its values were checked with the plan
elif this_host is not None:
    logger.info(f"    [{host.name}] plan: {plan_summary(this_host.plan)}")
    for warning in this_host.plan.warnings:
        logger.warning(f"    [{host.name}] {warning}")
    fleet_host(this_host)
