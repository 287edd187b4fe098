"""The fleet as pyinfra sees it: the shell around the pure plan (celery_fleet/fleetplan.py).

It reads each host's groups, inventory values and facts from pyinfra, checks what only the
controller can (its files, the GPUs a host really has), keeps the secrets, and hands the rest
to `plan_fleet`. `fleet_plans()` runs once per deploy, when deploy.py is first loaded and
before any operation runs: a bad value anywhere stops the deploy before any host is changed.
"""

from __future__ import annotations

from pathlib import Path

import gevent.lock
from packaging.requirements import InvalidRequirement, Requirement
from pyinfra.api.exceptions import PyinfraError
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.hardware import Cpus, Memory

from . import layout, model_file
from .facts import CpuArch, ModelOnHost, NvidiaGpus, RedisState
from .fleetplan import HostInput, PlannedHost, plan_fleet, roles_of
from .gpu import gpus_of
from .redis_state import adoption_problem
from .secrets import ControllerSecrets
from .settings import Settings, SettingsError
from .sizing import HostFacts
from .summary import FleetSummary
from .wheel import missing_compile_tools, requirement_wheel_dir, source_wheel_dir


class FleetError(PyinfraError):
    """Bad inventory: every problem found, each naming host, key, value and what is accepted."""


def host_roles(host) -> tuple[str, ...]:
    return roles_of(host.groups)


def is_retired(host) -> bool:
    return layout.RETIRED_GROUP in host.groups


def detected_facts(host) -> HostFacts:
    gpus, problem = gpus_of(host.get_fact(NvidiaGpus))
    arch, flags = host.get_fact(CpuArch) or ("", ())
    return HostFacts(ram_mb=host.get_fact(Memory), cores=host.get_fact(Cpus), gpus=gpus,
                     gpu_problem=problem, arch=arch, cpu_flags=flags, **_model_facts(host))


def _model_facts(host) -> dict:
    """What the inference server's plan needs of the model: size, format, KV cache a token
    and sha256 of the file on the controller (llm_model_path), or size and format of the model
    on the host (llm_model_host_path). Values not checked yet: the plan refuses a bad one."""
    if "llm" not in host_roles(host):
        return {}
    on_controller, on_host = (host.data.get(k) for k in ("llm_model_path",
                                                         "llm_model_host_path"))
    if isinstance(on_controller, str) and on_controller:
        return model_file.controller_facts(on_controller, layout.MODEL_DIGEST_CACHE)
    if isinstance(on_host, str) and on_host.startswith("/"):
        found = host.get_fact(ModelOnHost, path=on_host)
        return ({"llm_model_mb": found[0], "llm_model_format": found[1]} if found
                else {"llm_model_format": model_file.ABSENT})
    return {}


def controller_problems(host: str, settings: Settings, detected: HostFacts) -> list[str]:
    """Checks that need the controller's files or the host's detected facts."""
    found = []
    for path in settings["extra_ca_certificates"]:
        if not Path(path).is_file():
            found.append(str(SettingsError(host, "extra_ca_certificates", path,
                                           "paths of certificate files on this controller; "
                                           "this one does not exist")))
    for key, example in (("worker_app_source", "mycompany-workers==1.2"),
                         ("llm_server_source", "vllm==0.11.0")):
        source = settings[key]
        problem = _source_problem(source) if source else ""
        if problem:
            found.append(str(SettingsError(host, key, source, "a directory with a "
                                           "pyproject.toml on this controller, or a pip "
                                           f"requirement such as {example} (or name @ "
                                           f"git+https://...); {problem}")))
    override = settings["gpus"]
    if override and len(override) > len(detected.gpus):
        seen = (f"nvidia-smi failed: {detected.gpu_problem}" if detected.gpu_problem
                else f"nvidia-smi finds {len(detected.gpus)} GPU(s)")
        found.append(str(SettingsError(host, "gpus", override,
                                       f"at most the GPUs the host has ({seen}); a worker "
                                       "pinned to a missing GPU cannot start")))
    return found


def _source_problem(source: str) -> str:
    """What is wrong with a package source: a directory (a path that exists, or reads as one)
    or a PEP 508 requirement; '' when nothing."""
    path = Path(source)
    if path.exists() or source.startswith((".", "/", "~")):
        return "" if (path / "pyproject.toml").is_file() else "no pyproject.toml there"
    try:
        Requirement(source)
    except InvalidRequirement as error:
        return f"not a requirement ({str(error).splitlines()[0]})"
    return ""


def plan_inventory(inventory, unreachable=frozenset(), with_secrets: bool = False,
                   tuned: dict | None = None, check_build: bool = False
                   ) -> dict[str, PlannedHost]:
    """{host name: PlannedHost} for every reachable fleet host; raises FleetError listing every
    bad value and the broker count problem, before anything is changed. Hosts pyinfra could
    not connect to are left out (pyinfra reports them and the run fails). Secrets are read (or
    generated) on the controller only for a deploy. tuned: values `fleet tune` measured, as
    the group data it writes: under each host's own inventory values. check_build: the tools
    this controller needs to build what the plan installs (a deploy, `fleet plan`); `fleet
    status` and `fleet tune` only read the hosts and need none."""
    redis = {h.name: h.get_fact(RedisState) for h in inventory if h not in unreachable
             and ("broker" in host_roles(h) or is_retired(h))}
    inputs = [HostInput(h.name, host_roles(h), _with_tuned(inventory, h, tuned),
                        h.data.get("ssh_hostname") or h.name,
                        None if h in unreachable or not host_roles(h) else detected_facts(h),
                        redis[h.name]["password_digest"] if h.name in redis else None,
                        retired=is_retired(h),
                        runs_our_redis=h.name in redis and redis[h.name]["ours"],
                        runs_rabbitmq=is_retired(h) and h not in unreachable
                        and "rabbitmq-server" in h.get_fact(DebPackages))
              for h in inventory]
    # a broker whose Redis we could only adopt by losing its data is refused now
    adoption = {name: adoption_problem(name, state) for name, state in redis.items()
                if name in {h.name for h in inputs if "broker" in h.roles}}

    def checks(name: str, settings: Settings, detected: HostFacts) -> list[str]:
        return controller_problems(name, settings, detected) + [
            problem for problem in [adoption.get(name)] if problem]

    planned, errors = plan_fleet(inputs, checks, ControllerSecrets() if with_secrets else None)
    if check_build:
        errors += build_problems(planned)
    if errors:
        raise FleetError("invalid inventory, no host was changed:\n  " + "\n  ".join(errors))
    return planned


def build_problems(planned: dict[str, PlannedHost]) -> list[str]:
    """llama.cpp is compiled on this controller the first time a plan has it: the tools it
    takes are checked before any host is changed."""
    found = []
    for name, h in sorted(planned.items()):
        server = h.plan.llm.server if h.plan.llm else None
        if server is None or server.server != "llamacpp":
            continue
        source = Path(server.source)
        missing = missing_compile_tools(  # a checkout is compiled too (roles/llm_server.py)
            source_wheel_dir(source, layout.LLAMACPP_CMAKE_ARGS) if source.is_dir() else
            requirement_wheel_dir(server.source, layout.LLAMACPP_CMAKE_ARGS,
                                  layout.SERVER_WHEEL_CACHE))
        if missing:
            found.append(str(SettingsError(name, "inference_server", "llamacpp", (
                f"{' and '.join(missing)} on this controller, which compiles {server.source} "
                f"once for every host (apt-get install {' '.join(missing)}); or none, with "
                "your own server at llm_api_url"))))
    return found


def _with_tuned(inventory, host, tuned: dict | None) -> dict:
    data = host.data.dict()
    if tuned:
        own = inventory.get_host_data(host.name)
        data.update({key: value for key, value in tuned.items() if key not in own})
    return data


def fleet_plans(inventory, state) -> dict[str, PlannedHost]:
    """Plan every host of the inventory, with the broker's secrets; cached for the run
    (deploy.py runs once per host)."""
    # pyinfra's `state` is a context proxy: keep the cache on the State object itself. pyinfra
    # prepares hosts in parallel greenlets: the first plans, the others wait for its result.
    state = state._get_module() if hasattr(state, "_get_module") else state
    if not hasattr(state, "_celery_fleet_lock"):
        state._celery_fleet_lock = gevent.lock.RLock()
    with state._celery_fleet_lock:
        if getattr(state, "_celery_fleet_plans", None) is None:
            state._celery_fleet_plans = plan_inventory(
                inventory, not_in_this_run(inventory, state), with_secrets=True,
                check_build=True)
            state.add_callback_handler(FleetSummary(
                sorted(state._celery_fleet_plans),
                sorted(h.name for h in state.failed_hosts if host_roles(h))))  # unreachable
        return state._celery_fleet_plans


def not_in_this_run(inventory, state) -> frozenset:
    """Hosts pyinfra could not connect to, or was told to leave out (--limit)."""
    if state is None or not hasattr(state, "activated_hosts"):
        return frozenset()
    active = set(state.activated_hosts) - set(state.failed_hosts)
    return frozenset(h for h in inventory if h not in active)
