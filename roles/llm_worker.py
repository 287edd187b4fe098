"""The LLM worker: on CPU one instance (celery-llm-worker@cpu, prefork, concurrency 1); on GPU
one instance per GPU (celery-llm-worker@gpuN) pinned with CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

from pyinfra.api import deploy

from celery_fleet import layout, render
from celery_fleet.fleetplan import PlannedHost

from .rendered import template
from .units import retire_instances, run_instances, unit_files


@deploy("LLM worker")
def llm_worker(h: PlannedHost, app_changes: list) -> list:
    plan, user = h.plan.llm, h.settings["service_user"]
    unit, sandbox, reload = unit_files("LLM", layout.LLM_UNIT, render.llm_unit(h),
                                       gpu=plan.device == "gpu")
    env = template("Render the LLM worker's settings (0600: broker password, API key)",
                   layout.LLM_ENV, user=user, group=user, mode="600", **render.llm_env(h))
    ops = [unit, sandbox, env, reload]
    units = []
    for instance in plan.instances:
        instance_env = template(
            f"Render LLM worker {instance.name}'s settings (concurrency, threads, GPU)",
            layout.llm_instance_env(instance.name), src="llm-worker@.env.j2", user=user,
            group=user, mode="600", **render.llm_instance_env(h, instance))
        unit_name = layout.llm_unit_name(instance.name)
        units.append(unit_name)
        ops += [instance_env,
                *run_instances([unit_name], changed_by=[unit, sandbox, env, instance_env,
                                                        *app_changes])]
    return ops + retire_instances(layout.LLM_PREFIX, keep=units)
