"""The embedding worker: I/O-bound tasks against an embeddings API, in threads by default, as
template units celery-embedding-worker@1 ... @N (one per process of the plan)."""

from __future__ import annotations

from pyinfra.api import deploy

from celery_fleet import layout, render
from celery_fleet.fleetplan import PlannedHost

from .rendered import template
from .units import retire_instances, run_instances, unit_files


@deploy("Embedding worker")
def embedding_worker(h: PlannedHost, app_changes: list) -> list:
    user = h.settings["service_user"]
    unit, sandbox, reload = unit_files("embedding", layout.EMBEDDING_UNIT,
                                       render.embedding_unit(h), gpu=False)
    env = template("Render the embedding worker's settings (0600: broker password, API key)",
                   layout.EMBEDDING_ENV, user=user, group=user, mode="600",
                   **render.embedding_env(h))
    units = [layout.embedding_unit_name(i) for i in h.plan.embedding.instances]
    return [unit, sandbox, env, reload,
            *run_instances(units, changed_by=[unit, sandbox, env, *app_changes]),
            *retire_instances(layout.EMBEDDING_PREFIX, keep=units)]
