"""The fleet as pyinfra sees it: each host's roles, facts, validated settings and plan.

`fleet_plans()` runs once per deploy, when deploy.py is first loaded and before any operation
runs: it reads every host's facts, validates every host's inventory values and plans every
host, so a bad value anywhere stops the deploy before any host is changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gevent.lock
from pyinfra.api.exceptions import PyinfraError
from pyinfra.facts.hardware import Cpus, Memory

from .facts import NvidiaGpus
from .gpu import gpus_of
from .secrets import read_or_create
from .settings import SettingsError, problems, resolve
from .sizing import EMBEDDING_PREFETCH_MULTIPLIER, HostFacts, HostPlan, plan_host
from .summary import FleetSummary

FLOWER_USER = "flower"

# pyinfra inventory group -> role in the plan
GROUP_ROLES = {"brokers": "broker", "embedding_workers": "embedding", "llm_workers": "llm"}


class FleetError(PyinfraError):
    """Bad inventory: every problem found, each naming host, key, value and what is accepted."""


@dataclass(frozen=True)
class HostDeploy:
    name: str
    roles: tuple[str, ...]
    plan: HostPlan
    settings: dict
    broker_url: str  # a secret: only ever written into 0600 .env files
    private_address: str  # where the rest of the fleet reaches this host
    fleet_addresses: tuple[str, ...]  # every fleet host's, reachable in this run or not
    visibility_timeout_s: int  # one value for the whole fleet (visibility_timeout())
    flower_auth: str = ""  # "user:password" (a secret) on the broker when Flower runs
    task_events: bool = False  # workers send task events (for Flower)


def roles_of(host) -> tuple[str, ...]:
    return tuple(role for group, role in GROUP_ROLES.items() if group in host.groups)


def detected_facts(host) -> HostFacts:
    gpus, problem = gpus_of(host.get_fact(NvidiaGpus))
    return HostFacts(ram_mb=host.get_fact(Memory), cores=host.get_fact(Cpus), gpus=gpus,
                     gpu_problem=problem)


def private_address(host, settings: dict) -> str:
    return settings["private_address"] or host.data.get("ssh_hostname") or host.name


def controller_problems(host, settings: dict, detected: HostFacts) -> list[str]:
    """Checks that need the controller's files or the host's detected facts."""
    found = []
    for path in settings["extra_ca_certificates"]:
        if not Path(path).is_file():
            found.append(str(SettingsError(host.name, "extra_ca_certificates", path,
                                           "paths of certificate files on this controller; "
                                           "this one does not exist")))
    source = settings["worker_app_source"]
    if ("/" in source or source.startswith(".") or Path(source).exists()) \
            and not (Path(source) / "pyproject.toml").is_file():
        found.append(str(SettingsError(host.name, "worker_app_source", source,
                                       "a directory with a pyproject.toml on this controller, "
                                       "or a pip requirement such as mycompany-workers==1.2")))
    override = settings["gpus"]
    if override and len(override) > len(detected.gpus):
        seen = (f"nvidia-smi failed: {detected.gpu_problem}" if detected.gpu_problem
                else f"nvidia-smi finds {len(detected.gpus)} GPU(s)")
        found.append(str(SettingsError(host.name, "gpus", override,
                                       f"at most the GPUs the host has ({seen}); a worker "
                                       "pinned to a missing GPU cannot start")))
    return found


def plan_inventory(inventory, unreachable=frozenset()) -> dict[str, tuple]:
    """{host name: (host, settings, plan)} for every reachable fleet host; raises FleetError
    listing every bad value and the broker count problem, before anything is changed. Hosts
    pyinfra could not connect to are left out (pyinfra reports them and the run fails)."""
    everyone = [h for h in inventory if roles_of(h)]
    hosts = [h for h in everyone if h not in unreachable]
    errors: list[str] = []
    brokers = [h for h in everyone if "broker" in roles_of(h)]
    if len(brokers) != 1:
        errors.append(f"the brokers group must hold exactly one host (the Redis broker), "
                      f"it holds {len(brokers)}: {', '.join(h.name for h in brokers) or 'none'}")
    # every configured host shares the API's rate limit, reachable today or not
    embedding_hosts = sum(1 for h in everyone if "embedding" in roles_of(h))
    planned: dict[str, tuple] = {}
    for host in hosts:
        data = host.data.dict()
        bad_values = problems(host.name, data)
        errors += [str(error) for error in bad_values]
        valid = {k: v for k, v in data.items() if k not in {e.key for e in bad_values}}
        try:  # plan with the valid values too, so rules that refuse a combination speak now
            settings = resolve(host.name, valid)
            detected = detected_facts(host)
            plan = plan_host(host.name, detected, valid, roles_of(host),
                             embedding_hosts=embedding_hosts)
        except SettingsError as error:
            errors.append(str(error))
            continue
        controller = controller_problems(host, settings, detected)
        if settings["flower"] and "broker" not in roles_of(host):
            controller.append(str(SettingsError(host.name, "flower", True, "false here: set it "
                                                "on the broker host (Flower runs beside Redis)")))
        if controller:
            errors += controller
            continue
        planned[host.name] = (host, settings, plan)
    if errors:
        raise FleetError("invalid inventory, no host was changed:\n  " + "\n  ".join(errors))
    return planned


def fleet_plans(inventory, state=None) -> dict[str, HostDeploy]:
    """Plan every host of the inventory, with the broker's URL; cached for the run (deploy.py
    runs once per host)."""
    if state is None:
        return _plan_fleet(inventory, None)
    # pyinfra's `state` is a context proxy: keep the cache on the State object itself. pyinfra
    # prepares hosts in parallel greenlets: the first plans, the others wait for its result.
    state = state._get_module() if hasattr(state, "_get_module") else state
    if not hasattr(state, "_celery_fleet_lock"):
        state._celery_fleet_lock = gevent.lock.RLock()
    with state._celery_fleet_lock:
        if getattr(state, "_celery_fleet_plans", None) is None:
            state._celery_fleet_plans = _plan_fleet(inventory, state)
            state.add_callback_handler(FleetSummary(
                sorted(state._celery_fleet_plans),
                sorted(h.name for h in state.failed_hosts if roles_of(h))))  # unreachable
        return state._celery_fleet_plans


def _plan_fleet(inventory, state) -> dict[str, HostDeploy]:
    planned = plan_inventory(inventory, not_in_this_run(inventory, state))
    broker_host = next(h for h in inventory if "broker" in roles_of(h))
    broker_settings = resolve(broker_host.name, broker_host.data.dict())
    password = broker_settings["redis_password"] or read_or_create(
        broker_settings["secrets_dir"], f"{broker_host.name}.redis_password")
    broker_url = (f"redis://:{password}@{private_address(broker_host, broker_settings)}:"
                  f"{broker_settings['redis_port']}/0")
    visibility = visibility_timeout([settings for _, settings, _ in planned.values()])
    # the broker's firewall admits the whole fleet: a worker whose SSH is down (or that this
    # run leaves out with --limit) keeps its access to Redis
    addresses = tuple(sorted({private_address(h, resolve(h.name, h.data.dict()))
                              for h in inventory if roles_of(h)}))
    flower = broker_settings["flower"]
    flower_auth = (f"{FLOWER_USER}:" + read_or_create(
        broker_settings["secrets_dir"], f"{broker_host.name}.flower_password")) if flower else ""
    return {name: HostDeploy(name, roles_of(host), plan, settings, broker_url,
                             private_address(host, settings), addresses, visibility,
                             flower_auth=flower_auth if name == broker_host.name else "",
                             task_events=flower)
            for name, (host, settings, plan) in planned.items()}


def not_in_this_run(inventory, state) -> frozenset:
    """Hosts pyinfra could not connect to, or was told to leave out (--limit)."""
    if state is None or not hasattr(state, "activated_hosts"):
        return frozenset()
    active = set(state.activated_hosts) - set(state.failed_hosts)
    return frozenset(h for h in inventory if h not in active)


# Redis delivers a task again when it was not acknowledged within visibility_timeout of being
# handed to a worker. With acks late that covers the time a message waits in the worker's
# prefetch window and the time it runs: embedding workers hold 4 messages per task slot (so
# the last waits up to 3 task times, then runs one), LLM workers one. Any worker of the fleet
# may restore any other's messages, so the fleet shares one value: the largest. The margin
# covers clocks that differ between hosts (the worker that took a message stamps it with its
# clock, the one that restores it compares with its own). It is small because it is also how
# much longer the tasks of a dead worker (kill -9, OOM, power loss) wait to run again.
VISIBILITY_MARGIN_S = 60


def visibility_timeout(all_settings: list[dict]) -> int:
    longest = max([s["embedding_task_time_limit_s"] * EMBEDDING_PREFETCH_MULTIPLIER
                   for s in all_settings] + [s["llm_task_time_limit_s"] for s in all_settings]
                  + [0])
    return longest + VISIBILITY_MARGIN_S


def env_quote(value) -> str:
    """A value for a .env file that systemd's EnvironmentFile= and env-exec read alike."""
    return json.dumps(str(value))
