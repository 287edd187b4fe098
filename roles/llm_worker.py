"""The LLM worker: on CPU one instance (celery-llm-worker@cpu, prefork, concurrency 1); on GPU
one instance per GPU (celery-llm-worker@gpuN) pinned with CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import files

from celery_fleet import render
from celery_fleet.fleet import HostDeploy

from .units import LLM_PREFIX, retire_instances, run_instances, unit_files




@deploy("LLM worker")
def llm_worker(d: HostDeploy, app_changes: list) -> list:
    plan, user = d.plan.llm, d.settings["service_user"]
    unit, sandbox, reload = unit_files("LLM", render.LLM_UNIT, render.llm_unit(d),
                                       gpu=plan.device == "gpu")
    env = files.template(
        name="Render the LLM worker's settings (0600: broker password)",
        src=str(render.TEMPLATES_DIR / "llm-worker.env.j2"),
        dest=f"{render.CONFIG_DIR}/llm-worker.env", user=user, group=user, mode="600",
        **render.llm_env(d))
    ops = [unit, sandbox, env, reload]
    units = []
    for instance in plan.instances:
        instance_env = files.template(
            name=f"Render LLM worker {instance.name}'s settings (concurrency, threads, GPU)",
            src=str(render.TEMPLATES_DIR / "llm-worker@.env.j2"),
            dest=f"{render.CONFIG_DIR}/llm-worker@{instance.name}.env", user=user, group=user,
            mode="600", **render.llm_instance_env(d, instance.name))
        unit_name = render.llm_unit_name(instance.name)
        units.append(unit_name)
        ops += [instance_env,
                *run_instances([unit_name], changed_by=[unit, sandbox, env, instance_env,
                                                        *app_changes])]
    return ops + retire_instances(LLM_PREFIX, keep=units)
