"""The fleet's plan (pure): every host's inventory values and facts in, one PlannedHost per
host out, or every problem of every host at once.

The pyinfra shell (celery_fleet/fleet.py) gathers the inputs; the deploy, `fleet plan` and
`fleet status` all use the PlannedHost this returns. Each host's settings are resolved here,
once, and travel in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import layout
from .settings import Settings, SettingsError, problems, resolve
from .sizing import HostFacts, HostPlan, plan_host, visibility_timeout

# Controller-side checks of one host (files on the controller, detected GPUs): problem lines
ControllerChecks = Callable[[str, Settings, HostFacts], list[str]]
# A secret kept on the controller: (the broker's settings, its file name) -> the value
SecretStore = Callable[[Settings, str], str]


@dataclass(frozen=True)
class HostInput:
    """What the shell knows of one inventory host before planning."""
    name: str
    roles: tuple[str, ...]  # from its inventory groups (layout.GROUP_ROLES)
    data: dict  # its inventory values
    ssh_address: str  # where pyinfra reaches it
    detected: HostFacts | None = None  # None: not reached in this run (or left out by --limit)


@dataclass(frozen=True)
class Broker:
    address: str
    port: int
    password: str = ""  # a secret; "" where it was not asked for (fleet plan, fleet status)

    @property
    def url(self) -> str:
        return layout.redis_url(self.password, self.address, self.port)


@dataclass(frozen=True)
class PlannedHost:
    name: str
    roles: tuple[str, ...]
    plan: HostPlan
    settings: Settings
    private_address: str  # where the rest of the fleet reaches this host
    broker: Broker
    fleet_addresses: tuple[str, ...]  # every fleet host's, reachable in this run or not
    visibility_timeout_s: int  # one value for the whole fleet (sizing.visibility_timeout)
    flower_password: str = ""  # a secret; on the broker, when Flower runs
    task_events: bool = False  # workers send task events (for Flower)

    @property
    def broker_url(self) -> str:  # a secret: only ever written into 0600 files
        return self.broker.url

    @property
    def flower_auth(self) -> str:
        return f"{layout.FLOWER_USER}:{self.flower_password}" if self.flower_password else ""


def roles_of(groups) -> tuple[str, ...]:
    return tuple(role for group, role in layout.GROUP_ROLES.items() if group in groups)


def private_address(host: HostInput, settings: Settings) -> str:
    return settings["private_address"] or host.ssh_address


def redis_password_name(broker: str) -> str:
    return f"{broker}.redis_password"


def flower_password_name(broker: str) -> str:
    return f"{broker}.flower_password"


def plan_fleet(hosts: list[HostInput], controller_checks: ControllerChecks | None = None,
               secrets: SecretStore | None = None) -> tuple[dict[str, PlannedHost], list[str]]:
    """({name: PlannedHost} of every reached fleet host, every problem found). Hosts not
    reached are not planned, but count where the whole fleet does (the broker's firewall, the
    API's rate limit shared by every embedding host). secrets: None plans without them."""
    fleet = [h for h in hosts if h.roles]
    errors: list[str] = []
    brokers = [h for h in fleet if "broker" in h.roles]
    if len(brokers) != 1:
        errors.append(f"the brokers group must hold exactly one host (the Redis broker), "
                      f"it holds {len(brokers)}: {', '.join(h.name for h in brokers) or 'none'}")
    embedding_hosts = sum(1 for h in fleet if "embedding" in h.roles)
    settings: dict[str, Settings] = {}
    plans: dict[str, HostPlan] = {}
    for host in fleet:
        bad = problems(host.name, host.data)
        # resolved from the valid values: rules that refuse a combination speak now too
        settings[host.name] = resolve(host.name, {k: v for k, v in host.data.items()
                                                  if k not in {e.key for e in bad}})
        if host.detected is None:
            continue  # not reached: pyinfra reports it, the run fails for it
        errors += [str(error) for error in bad]
        try:
            plan = plan_host(host.name, host.detected, settings[host.name], host.roles,
                             embedding_hosts=embedding_hosts)
        except SettingsError as error:
            errors.append(str(error))
            continue
        found = controller_checks(host.name, settings[host.name], host.detected) \
            if controller_checks else []
        if settings[host.name]["flower"] and "broker" not in host.roles:
            found.append(str(SettingsError(host.name, "flower", True, "false here: set it on "
                                           "the broker host (Flower runs beside Redis)")))
        networks = settings[host.name]["broker_allowed_networks"]
        if networks and "broker" not in host.roles:
            found.append(str(SettingsError(host.name, "broker_allowed_networks", networks,
                                           "[] here: set it on the broker host (its firewall "
                                           "admits them)")))
        errors += found
        if not bad and not found:
            plans[host.name] = plan
    if errors:
        return {}, errors

    broker_host = brokers[0]
    broker_settings = settings[broker_host.name]
    password = broker_settings["redis_password"] or (
        secrets(broker_settings, redis_password_name(broker_host.name)) if secrets else "")
    broker = Broker(private_address(broker_host, broker_settings), broker_settings["redis_port"],
                    password)
    flower = broker_settings["flower"]
    flower_password = secrets(broker_settings, flower_password_name(broker_host.name)) \
        if flower and secrets else ""
    # the broker's firewall admits the whole fleet: a worker whose SSH is down (or that this
    # run leaves out with --limit) keeps its access to Redis
    addresses = tuple(sorted({private_address(h, settings[h.name]) for h in fleet}))
    visibility = visibility_timeout([settings[name] for name in plans])
    by_name = {h.name: h for h in fleet}
    return {name: PlannedHost(name, by_name[name].roles, plan, settings[name],
                              private_address(by_name[name], settings[name]), broker, addresses,
                              visibility,
                              flower_password=flower_password if name == broker_host.name
                              else "",
                              task_events=flower)
            for name, plan in plans.items()}, []
