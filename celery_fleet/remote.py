"""Reaching the fleet's hosts from the controller (pyinfra shell): connect to an inventory, run
one command on a host, wait until a service is healthy (with its journal when it is not).

Used by `fleet plan` and `fleet status` (celery_fleet/inventory_facts.py, status_probe.py)
and by the roles' checks after a deploy (roles/worker_check.py, roles/flower.py).
"""

from __future__ import annotations

import os
import shlex
import time
from typing import Callable

from pyinfra.api import Config, State, StringCommand
from pyinfra.api.connect import connect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.context import ctx_state

from .fleet import not_in_this_run, plan_inventory
from .fleetplan import PlannedHost

POLL_S = 2


def connect_inventory(path: str, check_build: bool = False):
    """(state, inventory, {name: PlannedHost}) for an inventory file: every host connected
    (those that cannot be are left out of the plans), nothing changed on any host."""
    # pyinfra_cli monkey-patches the whole process for gevent when imported: only here, where
    # the command line needs it, never where roles or tests import this module
    from pyinfra_cli.inventory import make_inventory

    state = State(check_for_changes=False)
    with ctx_state.use(state):
        inventory = make_inventory(path, cwd=os.getcwd())
        state.init(inventory, Config())
        try:
            connect_all(state)
        except PyinfraError:
            if state.active_hosts:
                raise
            # "No hosts remaining!": none answered (pyinfra printed each, and why); the callers
            # say which hosts they could not read, one line each
        planned: dict[str, PlannedHost] = plan_inventory(
            inventory, not_in_this_run(inventory, state), check_build=check_build)
    return state, inventory, planned


def run_command(host, command: str, user: str | None = None, sudo: bool = False
                ) -> tuple[bool, list[str], list[str]]:
    """(ok, stdout lines, stderr lines) of one shell command; as `user` (through sudo) if
    given, as root if sudo. Nothing is printed: the caller says what it means."""
    arguments = {}
    if user:
        arguments = {"_sudo": True, "_sudo_user": user}
    elif sudo:
        arguments = {"_sudo": True}
    ok, output = host.run_shell_command(StringCommand(command), print_output=False,
                                        print_input=False, **arguments)
    return ok, output.stdout_lines, output.stderr_lines


def journal(host, units: list[str], lines: int = 15) -> str:
    flags = " ".join(f"-u {shlex.quote(unit)}" for unit in units)
    _, out, _ = run_command(host, f"journalctl {flags} -n {lines} --no-pager -o cat || true",
                            sudo=True)
    return "\n".join(out)


def wait_until_healthy(host, problems: Callable[[], list[str]], units: list[str],
                       timeout_s: float, what: str) -> None:
    """Ask `problems()` every few seconds until it finds none; after timeout_s raise a
    PyinfraError naming what is wrong, with the units' last log lines."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = problems()
        if not found:
            return
        if time.monotonic() > deadline:
            raise PyinfraError(f"{what}:\n  " + "\n  ".join(found) + "\nlast log lines:\n"
                               + journal(host, units))
        time.sleep(POLL_S)
