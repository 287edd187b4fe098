"""The embedding worker: I/O-bound tasks against an embeddings API, gevent by default, as
template units celery-embedding-worker@1 ... @N (one per process of the plan)."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import files

from celery_fleet import render
from celery_fleet.fleet import HostDeploy

from .units import EMBEDDING_PREFIX, retire_instances, run_instances, unit_files




@deploy("Embedding worker")
def embedding_worker(d: HostDeploy, app_changes: list) -> list:
    plan, user = d.plan.embedding, d.settings["service_user"]
    unit, sandbox, reload = unit_files("embedding", render.EMBEDDING_UNIT,
                                       render.embedding_unit(d), gpu=False)
    env = files.template(
        name="Render the embedding worker's settings (0600: broker password, API key)",
        src=str(render.TEMPLATES_DIR / "embedding-worker.env.j2"),
        dest=f"{render.CONFIG_DIR}/embedding-worker.env", user=user, group=user, mode="600",
        **render.embedding_env(d))
    units = [render.embedding_unit_name(i) for i in plan.instances]
    return [unit, sandbox, env, reload,
            *run_instances(units, changed_by=[unit, sandbox, env, *app_changes]),
            *retire_instances(EMBEDDING_PREFIX, keep=units)]
