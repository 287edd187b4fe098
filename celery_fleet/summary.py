"""Progress through a deploy, and its last lines: which hosts were deployed, which were not
and why.

pyinfra names each operation as it starts; on a fleet of many hosts that is a long scroll
with no sense of how far along it is, so every tenth of the operations adds one line:
"--> celery-fleet: 40% (34 of 85 operations, 52 s)". pyinfra reports an unreachable host when
it connects, at the top of a long run, and leaves it out of the results table; the summary
prints it again at the end, after the last host disconnected.
"""

from __future__ import annotations

import time

import click
from pyinfra.api.state import BaseStateCallback


def summary_lines(planned: list[str], unreachable: list[str], failed: list[str],
                  executed: bool = True) -> list[str]:
    """Pure: the summary for hosts planned, unreachable before, and failed during the run.
    executed False: no operation ran (`--dry`, or the changes shown were not confirmed)."""
    deployed = [h for h in planned if h not in failed]
    total = len(planned) + len(unreachable)
    if not executed:
        return [f"--> celery-fleet: nothing was changed (--dry, or not confirmed); "
                f"{len(planned)} of {total} host(s) planned"] + [
            f"    [{h}] unreachable: not planned" for h in unreachable]
    lines = [f"--> celery-fleet: deployed {len(deployed)} of {total} host(s)"]
    lines += [f"    [{h}] unreachable: not changed; deploy again once it answers SSH"
              for h in unreachable]
    lines += [f"    [{h}] failed: see its errors above; the other hosts were deployed"
              for h in failed]
    return lines


def progress_line(done: int, total: int, seconds: float, last_tenth: int) -> str | None:
    """Pure: a line when `done` operations cross into a new tenth of `total`, else None."""
    if not total or done * 10 // total <= last_tenth:
        return None
    return (f"--> celery-fleet: {done * 100 // total}% ({done} of {total} operations, "
            f"{seconds:.0f} s)")


class FleetSummary(BaseStateCallback):
    def __init__(self, planned: list[str], unreachable: list[str]):
        self.planned, self.unreachable, self.disconnected = planned, unreachable, 0
        self.done, self.tenth, self.started, self.total = 0, 0, 0.0, 0

    def operation_start(self, state, op_hash):  # noqa: D102
        if not self.total:  # the order is fixed once operations run
            self.started, self.total = time.monotonic(), len(state.get_op_order())

    def operation_end(self, state, op_hash):  # noqa: D102
        self.done += 1
        line = progress_line(self.done, self.total, time.monotonic() - self.started,
                             self.tenth)
        if line:
            self.tenth = self.done * 10 // self.total
            click.echo(line, err=True)

    def host_disconnect(self, state, host):  # noqa: D102  (pyinfra passes state, host)
        self.disconnected += 1
        if self.disconnected != len(state.activated_hosts):  # once, after the last one
            return
        failed = sorted(h.name for h in state.failed_hosts if h.name in self.planned)
        click.echo("", err=True)
        # pyinfra stops before running any operation on --dry, or when its prompt is refused
        for line in summary_lines(self.planned, self.unreachable, failed,
                                  executed=bool(self.total)):
            click.echo(line, err=True)
