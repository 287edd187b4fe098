"""`fleet plan inventory/X.py`: connect to every host of an inventory with pyinfra, read its
facts, and plan it exactly as the deploy would (nothing is changed on any host)."""

from __future__ import annotations

from .remote import connect_inventory
from .sizing import HostPlan


def plan_from_inventory(path: str) -> list[HostPlan]:
    _, _, planned = connect_inventory(path)
    return [h.plan for h in planned.values()]
