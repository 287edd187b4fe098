"""`fleet plan inventory/X.py`: connect to every host of an inventory with pyinfra, read its
facts, and plan it exactly as the deploy would (nothing is changed on any host)."""

from __future__ import annotations

from .fleet import host_roles, is_retired, not_in_this_run
from .remote import connect_inventory
from .sizing import HostPlan


def plan_from_inventory(path: str) -> tuple[list[HostPlan], list[str], list[str]]:
    """(the plan of every fleet host reached, the names of those that could not be, the hosts
    in `retired`)."""
    state, inventory, planned = connect_inventory(path, check_build=True)
    unreachable = sorted(h.name for h in not_in_this_run(inventory, state) if host_roles(h))
    retired = sorted(h.name for h in inventory if is_retired(h))
    return [h.plan for h in planned.values()], unreachable, retired
