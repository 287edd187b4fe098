"""`fleet plan inventory/X.py`: connect to every host of an inventory with pyinfra, read its
facts, and plan it exactly as the deploy would (nothing is changed on any host)."""

from __future__ import annotations

import os

from pyinfra.api import Config, State
from pyinfra.api.connect import connect_all
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory

from .fleet import not_in_this_run, plan_inventory
from .sizing import HostPlan


def plan_from_inventory(path: str) -> list[HostPlan]:
    state = State(check_for_changes=False)
    with ctx_state.use(state):
        inventory = make_inventory(path, cwd=os.getcwd())
        state.init(inventory, Config())
        connect_all(state)
        planned = plan_inventory(inventory, not_in_this_run(inventory, state))
    return [plan for _, _, plan in planned.values()]
