"""The last lines of a deploy: which hosts were deployed, which were not and why.

pyinfra reports an unreachable host when it connects, at the top of a long run, and leaves it
out of the results table; this prints it again at the end, after the last host disconnected.
"""

from __future__ import annotations

import click
from pyinfra.api.state import BaseStateCallback


def summary_lines(planned: list[str], unreachable: list[str], failed: list[str]) -> list[str]:
    """Pure: the summary for hosts planned, unreachable before, and failed during the run."""
    deployed = [h for h in planned if h not in failed]
    total = len(planned) + len(unreachable)
    lines = [f"--> celery-fleet: deployed {len(deployed)} of {total} host(s)"]
    lines += [f"    [{h}] unreachable: not changed; deploy again once it answers SSH"
              for h in unreachable]
    lines += [f"    [{h}] failed: see its errors above; the other hosts were deployed"
              for h in failed]
    return lines


class FleetSummary(BaseStateCallback):
    def __init__(self, planned: list[str], unreachable: list[str]):
        self.planned, self.unreachable, self.disconnected = planned, unreachable, 0

    def host_disconnect(self, state, host):  # noqa: D102  (pyinfra passes state, host)
        self.disconnected += 1
        if self.disconnected != len(state.activated_hosts):  # once, after the last one
            return
        failed = sorted(h.name for h in state.failed_hosts if h.name in self.planned)
        click.echo("", err=True)
        for line in summary_lines(self.planned, self.unreachable, failed):
            click.echo(line, err=True)
