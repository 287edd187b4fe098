"""The LLM inference server the plan runs (inference_server; celery_fleet/inference.py): its own
virtualenv, the model (uploaded once, checked by sha256), one unit instance per LLM worker
instance (celery-fleet-llm-server@cpu, @cpu0 ..., @gpu0 ...), and after a change a real
completion from each."""

from __future__ import annotations

import json
import shlex
from pathlib import Path, PurePosixPath

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.facts.files import Directory, File, FindDirectories, FindFiles
from pyinfra.operations import apt, files, python, server, systemd
from pyinfra.operations.util import any_changed

from celery_fleet import layout, render
from celery_fleet.fleetplan import PlannedHost
from celery_fleet.remote import run_command, wait_until_healthy
from celery_fleet.wheel import build_requirement_wheel, build_wheel, requirement_wheel_dir

from .python_env import python_venv
from .rendered import sandbox, template
from .units import retire_instances, run_instances
from .worker_base import app_installed, uploaded_wheel

# A server answers once its model is loaded: seconds for the lab's, minutes for tens of GB
SERVER_READY_TIMEOUT_S = 900
# The check's request: a few tokens are a real generation, and quick on any model
CHECK_MAX_TOKENS = 4


def _server_package(h: PlannedHost) -> str:
    """What pip installs in the server's virtualenv: a wheel uploaded from the controller
    (llama-cpp-python built here; a directory given as llm_server_source), or a requirement
    the host fetches from its index (vLLM's wheels)."""
    plan, install_dir = h.plan.llm.server, h.settings["install_dir"]
    source = Path(plan.source)
    if (source / "pyproject.toml").is_file() and plan.server == "vllm":
        return uploaded_wheel(build_wheel(source), install_dir, "the vllm server")
    if (source / "pyproject.toml").is_file():  # a llama-cpp-python checkout: portable flags
        wheel = build_wheel(source, cmake_args=layout.LLAMACPP_CMAKE_ARGS)
        return uploaded_wheel(wheel, install_dir, "llama.cpp's server") + layout.LLAMACPP_EXTRAS
    if plan.server == "vllm":
        return plan.source
    cache = requirement_wheel_dir(plan.source, layout.LLAMACPP_CMAKE_ARGS,
                                  layout.SERVER_WHEEL_CACHE)
    if not any(cache.glob("*.whl")):
        logger.info(f"    building {plan.source} once on this controller for every host "
                    f"(minutes; cached in {cache})")
    wheel = build_requirement_wheel(plan.source, layout.LLAMACPP_CMAKE_ARGS,
                                    layout.SERVER_WHEEL_CACHE)
    return uploaded_wheel(wheel, install_dir, "llama.cpp's server") + layout.LLAMACPP_EXTRAS


def _model(h: PlannedHost) -> list:
    """The model uploaded from the controller into a directory named by its sha256: uploaded
    beside it, checked on the host, then moved in place. So a file at that path is the whole,
    checked model (a re-run does not read GBs again to compare), and a new model never
    overwrites the one a running server has mapped."""
    plan = h.plan.llm.server
    if not plan.upload_from:
        return []
    directory = str(PurePosixPath(plan.model_path).parent)
    files.directory(name=f"Ensure {directory} exists", path=directory, user="root",
                    group="root", mode="755")
    if host.get_fact(File, path=plan.model_path):
        return []
    partial = f"{plan.model_path}.partial"
    put = files.put(name=f"Upload the model {Path(plan.upload_from).name}",
                    src=plan.upload_from, dest=partial, mode="644")
    check = server.shell(
        name="Check the uploaded model's sha256, then move it in place",
        commands=[f"printf '%s  %s\\n' {plan.model_sha256} {shlex.quote(partial)} | sha256sum "
                  f"--check --strict --quiet || {{ rm -f {shlex.quote(partial)}; exit 1; }}",
                  f"mv {shlex.quote(partial)} {shlex.quote(plan.model_path)}"])
    return [put, check]


def _remove_other_models(h: PlannedHost) -> None:
    """Models uploaded before, which no server of the plan loads any more (after the servers
    restarted: Linux keeps a removed file's pages for a process that still maps it)."""
    plan = h.plan.llm.server
    keep = str(PurePosixPath(plan.model_path).parent) if plan and plan.upload_from else None
    if not host.get_fact(Directory, path=layout.MODEL_DIR):
        return
    for path in host.get_fact(FindDirectories, path=layout.MODEL_DIR, maxdepth=1):
        if path not in (layout.MODEL_DIR, keep):
            files.directory(name=f"Remove {path} (a model no server loads)", path=path,
                            present=False)
    for path in host.get_fact(FindFiles, path=layout.MODEL_DIR, maxdepth=1):
        files.file(name=f"Remove {path} (a model no server loads)", path=path, present=False)


def _verify(h: PlannedHost) -> None:
    """A real completion from each server: it loaded the model and generates."""
    plan = h.plan.llm.server
    python_bin = f"{layout.llm_server_venv(h.settings['install_dir'])}/bin/python"
    body = json.dumps({"model": plan.model_name, "prompt": "celery-fleet check",
                       "max_tokens": CHECK_MAX_TOKENS})
    units = [layout.llm_server_unit_name(i.name) for i in plan.instances]

    def problems() -> list[str]:
        found = []
        for instance in plan.instances:
            request = (
                "import json, sys, urllib.request as u; r = u.urlopen(u.Request("
                f"{instance.url + '/completions'!r}, data=sys.argv[1].encode(), "
                "headers={'content-type': 'application/json'}), timeout=60); "
                "print(json.load(r)['usage']['completion_tokens'])")
            ok, out, err = run_command(host, f"{python_bin} -c {shlex.quote(request)} "
                                             f"{shlex.quote(body)} 2>&1 | tail -1")
            answer = "".join(out).strip()
            if not answer.isdigit() or int(answer) < 1:
                found.append(f"{layout.llm_server_unit_name(instance.name)} on {instance.url}: "
                             f"no completion yet ({answer[-200:] or 'no answer'})")
        return found

    wait_until_healthy(host, problems, units, SERVER_READY_TIMEOUT_S,
                       "the inference server does not answer with a completion")


@deploy("LLM inference server")
def llm_server(h: PlannedHost) -> list:
    """Returns the operations whose change restarts the servers."""
    plan, s = h.plan.llm.server, h.settings
    if plan is None:
        return retire_llm_server(s["install_dir"])
    user, venv = s["service_user"], layout.llm_server_venv(s["install_dir"])
    if plan.server == "llamacpp":  # ggml's threads are OpenMP's (the wheel links libgomp)
        apt.packages(name="Install the OpenMP runtime llama.cpp uses", packages=["libgomp1"],
                     update=True, cache_time=86400)
    else:  # Triton (vLLM's kernels) compiles its CUDA launcher (driver.c, against Python.h)
        # with the C compiler at start: without one the server dies ("Failed to find C
        # compiler", triton/runtime/build.py; vllm-project/vllm#2997, #15329)
        apt.packages(name="Install the C compiler and Python headers vLLM's Triton needs",
                     packages=["gcc", "python3-dev"], update=True, cache_time=86400)
    python_venv(h, venv)
    installed = app_installed(name=f"Install the {plan.server} server", venv=venv,
                              requirements=[], app=_server_package(h))
    model = _model(h)
    unit = template(f"Render the {plan.server} server unit (model, context, memory)",
                    layout.unit_path(layout.LLM_SERVER_UNIT), mode="644",
                    **render.llm_server_unit(h))
    dropin = sandbox("the inference server's", layout.LLM_SERVER_UNIT,
                     gpu=plan.server == "vllm")
    reload = systemd.daemon_reload(name="Reload systemd (a unit file changed)",
                                   _if=any_changed(unit, dropin))
    units = [layout.llm_server_unit_name(i.name) for i in plan.instances]
    # first the servers the plan drops: a new instance may take the port an old one holds
    # (@cpu's 8080 goes to @cpu0 when one slot becomes two)
    ops = [*retire_instances(layout.LLM_SERVER_PREFIX, keep=units), installed, *model, unit,
           dropin, reload]
    for instance in plan.instances:
        env = template(f"Render inference server {instance.name}'s settings (port, threads, "
                       "generations at once, GPU)", layout.llm_server_instance_env(instance.name),
                       src="llm-server@.env.j2", user=user, group=user, mode="600",
                       **render.llm_server_instance_env(h, instance))
        ops += [env, *run_instances([layout.llm_server_unit_name(instance.name)],
                                    changed_by=[installed, *model, unit, dropin, env])]
    _remove_other_instance_files(keep=[i.name for i in plan.instances])
    _remove_other_models(h)
    python.call(name="Check each inference server answers with a real completion",
                function=_verify, h=h, _if=any_changed(*ops))
    return ops


def _remove_other_instance_files(keep: list[str]) -> None:
    """The settings files of server instances the plan no longer has."""
    wanted = {layout.llm_server_instance_env(name) for name in keep}
    for path in host.get_fact(FindFiles, path=layout.CONFIG_DIR, maxdepth=1,
                              fname=PurePosixPath(layout.llm_server_instance_env("*")).name):
        if path not in wanted:
            files.file(name=f"Remove {path} (a server no longer in the plan)", path=path,
                       present=False)


@deploy("Retire the inference server (the plan has none)")
def retire_llm_server(install_dir: str) -> list:
    """Its instances stop; its unit, settings, virtualenv (GBs for vLLM), models and caches
    go. The plan's inventory brings them back (the llama.cpp wheel stays cached on the
    controller)."""
    ops = retire_instances(layout.LLM_SERVER_PREFIX, keep=[])
    removed = [files.file(name=f"Remove {layout.LLM_SERVER_UNIT}",
                          path=layout.unit_path(layout.LLM_SERVER_UNIT), present=False),
               files.directory(name=f"Remove {layout.LLM_SERVER_UNIT}'s drop-ins",
                               path=layout.dropin_dir(layout.LLM_SERVER_UNIT), present=False)]
    systemd.daemon_reload(name="Reload systemd (the server's unit is gone)",
                          _if=any_changed(*removed))
    _remove_other_instance_files(keep=[])
    for path, what in ((layout.llm_server_venv(install_dir), "the server's virtualenv"),
                       (layout.MODEL_DIR, "the models uploaded for it"),
                       (f"/var/cache/{layout.LLM_SERVER_CACHE}", "its caches")):
        files.directory(name=f"Remove {path} ({what})", path=path, present=False)
    return ops
