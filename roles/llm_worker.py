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
    for instance in plan.instances:
        instance_env = template(
            f"Render LLM worker {instance.name}'s settings (concurrency, threads, GPU)",
            layout.llm_instance_env(instance.name), src="llm-worker@.env.j2", user=user,
            group=user, mode="600", **render.llm_instance_env(h, instance))
        unit_name = layout.llm_unit_name(instance.name)
        ops += [instance_env,
                *run_instances([unit_name], changed_by=[unit, sandbox, env, instance_env,
                                                        *app_changes])]
    return ops


@deploy("Stop the LLM worker instances the plan no longer has")
def retire_stale_llm_workers(h: PlannedHost) -> list:
    """Before the inference servers change: a worker instance the plan drops (@cpu, when two
    slots become @cpu0 and @cpu1) stops with a warm shutdown while its server still answers
    its running task, and its server's port is free for the new one."""
    keep = [layout.llm_unit_name(i.name) for i in h.plan.llm.instances]
    return retire_instances(layout.LLM_PREFIX, keep=keep)
