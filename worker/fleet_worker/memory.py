"""Memory watch: a worker that outgrows its plan is recycled cleanly, before the kernel kills it.

Every FLEET_MEMORY_CHECK_S the worker's main process measures itself and its pool children
(proportional set size: pages shared by prefork children count once, as the cgroup counts
them). Above FLEET_MEMORY_RECYCLE_MB it asks for Celery's warm shutdown: running tasks
finish, prefetched ones go back to Redis, and the process exits with EXIT_RECYCLE, which the
unit's RestartForceExitStatus= turns into a restart. Prefork pools also replace a single
child after its task (Celery's --max-memory-per-child); this watch covers gevent and threads,
where every task shares one process. MemoryMax= stays the hard stop (the kernel kills; tasks
come back after visibility_timeout).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from celery import bootsteps
from celery.worker import state

EXIT_RECYCLE = 75  # EX_TEMPFAIL: the unit restarts the worker on it

logger = logging.getLogger(__name__)


def tree_memory_mb(pid: int) -> float:
    """Memory of a process and its children: PSS (the kernel's smaps_rollup), else RSS.

    Read from /proc directly: the worker's sandbox (ProcSubset=pid) hides /proc/stat, without
    which psutil cannot even open a process."""
    total_kb, pending, seen = 0, [pid], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        total_kb += _memory_kb(current)
        pending.extend(_children(current))
    return total_kb / 1024


def _memory_kb(pid: int) -> int:
    for path, field in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(field):
                    return int(line.split()[1])
        except (OSError, ValueError):
            continue
    return 0


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            pass
    return children


def tasks_run() -> int:
    return sum(state.total_count.values())


def should_recycle(used_mb: float, limit_mb: int, tasks: int) -> bool:
    """Only a worker that grew while running tasks: one above the limit from its start would
    only restart forever (the limit is wrong; `fleet status` shows it)."""
    return bool(limit_mb) and used_mb > limit_mb and tasks > 0


def memory_watch(limit_mb: int, every_s: float) -> type[bootsteps.StartStopStep]:
    """The worker bootstep that watches this worker's memory (Celery adds steps by class)."""
    return type("MemoryWatch", (MemoryWatch,), {"limit_mb": limit_mb, "every_s": every_s})


class MemoryWatch(bootsteps.StartStopStep):
    """Set up by memory_watch(): limit_mb 0 watches nothing."""
    requires = {"celery.worker.components:Timer"}
    limit_mb = 0
    every_s = 30.0

    def __init__(self, worker, **kwargs):
        self.timer = None

    def start(self, worker):
        if self.limit_mb:
            self.timer = worker.timer.call_repeatedly(self.every_s, self.check, (), priority=10)

    def stop(self, worker):
        if self.timer is not None:
            self.timer.cancel()

    def check(self):
        try:
            used = tree_memory_mb(os.getpid())
        except Exception:  # never let the watch take the worker down
            logger.exception("memory watch: cannot read this worker's memory")
            return
        if state.should_stop is None and should_recycle(used, self.limit_mb, tasks_run()):
            logger.warning("memory %.0f MB is above %d MB after %d tasks: warm restart "
                           "(running tasks finish, prefetched ones go back to the queue)",
                           used, self.limit_mb, tasks_run())
            state.should_stop = EXIT_RECYCLE
