"""The embedding worker: I/O-bound tasks against an embeddings API, gevent by default, as
template units celery-embedding-worker@1 ... @N (one per process of the plan)."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from celery_fleet import render
from celery_fleet.fleet import HostDeploy

from .units import EMBEDDING_PREFIX, retire_instances, run_instances




@deploy("Embedding worker")
def embedding_worker(d: HostDeploy, app_changes: list) -> list:
    plan, user = d.plan.embedding, d.settings["service_user"]
    unit = files.template(
        name="Render the embedding worker unit (pool, concurrency, MemoryMax of the plan)",
        src=str(render.TEMPLATES_DIR / f"{render.EMBEDDING_UNIT}.j2"),
        dest=f"{render.UNIT_DIR}/{render.EMBEDDING_UNIT}", mode="644",
        **render.embedding_unit(d))
    dropin = files.directory(name="Ensure the embedding worker's drop-in directory exists",
                             path=render.dropin_dir(render.EMBEDDING_UNIT), mode="755")
    sandbox = files.template(
        name="Render the embedding worker's sandbox (hardening drop-in)",
        src=str(render.TEMPLATES_DIR / "hardening.conf.j2"),
        dest=f"{render.dropin_dir(render.EMBEDDING_UNIT)}/hardening.conf", mode="644",
        **render.hardening(render.EMBEDDING_UNIT, gpu=False))
    env = files.template(
        name="Render the embedding worker's settings (0600: broker password, API key)",
        src=str(render.TEMPLATES_DIR / "embedding-worker.env.j2"),
        dest=f"{render.CONFIG_DIR}/embedding-worker.env", user=user, group=user, mode="600",
        **render.embedding_env(d))
    reload = systemd.daemon_reload(name="Reload systemd (a unit file changed)",
                                   _if=any_changed(unit, sandbox))
    units = [render.embedding_unit_name(i) for i in plan.instances]
    return [unit, dropin, sandbox, env, reload,
            *run_instances(units, changed_by=[unit, sandbox, env, *app_changes]),
            *retire_instances(EMBEDDING_PREFIX, keep=units)]
