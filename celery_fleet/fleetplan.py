"""The fleet's plan (pure): every host's inventory values and facts in, one PlannedHost per
host out, or every problem of every host at once.

The pyinfra shell (celery_fleet/fleet.py) gathers the inputs; the deploy, `fleet plan` and
`fleet status` all use the PlannedHost this returns. Each host's settings are resolved here,
once, and travel in it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Protocol

from . import layout
from .redis_state import password_digest
from .settings import Settings, SettingsError, problems, resolve
from .sizing import HostFacts, HostPlan, plan_host, visibility_timeout

# RabbitMQ: one node, or a cluster whose quorum queues keep a majority when one (3), two (5)
# or three (7) of its nodes are lost
RABBITMQ_CLUSTER_SIZES = (1, 3, 5, 7)
# Controller-side checks of one host (files on the controller, detected GPUs): problem lines
ControllerChecks = Callable[[str, Settings, HostFacts], list[str]]


class Secrets(Protocol):
    """The controller's secrets (celery_fleet/secrets.py): only a deploy asks for them."""

    def read(self, host: str, key: str, value: str) -> str:
        """A secret setting's value: the secret itself, or read from the source it names
        (secret_sources.py); raises SettingsError naming host, key and source."""

    def kept(self, settings: Settings, name: str, may_create: bool) -> str | None:
        """A password generated once and kept on the controller; None where none is kept and
        may_create is False."""


@dataclass(frozen=True)
class HostInput:
    """What the shell knows of one inventory host before planning."""
    name: str
    roles: tuple[str, ...]  # from its inventory groups (layout.GROUP_ROLES)
    data: dict  # its inventory values
    ssh_address: str  # where pyinfra reaches it
    detected: HostFacts | None = None  # None: not reached in this run (or left out by --limit)
    # the password its Redis requires now, as redis_state.password_digest; None: no Redis,
    # no password, or not reached
    redis_password_digest: str | None = None
    retired: bool = False  # in the `retired` group: leaves the fleet (roles/retire.py)
    runs_our_redis: bool = False  # its Redis runs celery-fleet's configuration
    runs_rabbitmq: bool = False  # rabbitmq-server is installed (asked of retired hosts)


@dataclass(frozen=True)
class Broker:
    address: str
    port: int
    password: str = ""  # a secret; "" where it was not asked for (fleet plan, fleet status)

    @property
    def url(self) -> str:
        return layout.redis_url(self.password, self.address, self.port)


@dataclass(frozen=True)
class RabbitmqCluster:
    """broker: rabbitmq: every broker's address (the first seeds the cluster), one user."""
    addresses: tuple[str, ...]
    port: int
    password: str = ""  # secrets; "" where not asked for (fleet plan, fleet status)
    erlang_cookie: str = ""
    first: int = 0  # the node this host connects to first

    @property
    def url(self) -> str:
        """Every node, starting at this host's own first: Celery and kombu fail over to the
        next one (';' separated, Celery's broker_url failover list) when the one they use goes
        away. The hosts start at different nodes: connections, and the quorum queues' leaders
        (placed on the node of the client that declares them), spread over the cluster."""
        order = self.addresses[self.first:] + self.addresses[:self.first]
        return ";".join(layout.amqp_url(self.password, a, self.port) for a in order)

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(layout.rabbitmq_node(a) for a in self.addresses)


@dataclass(frozen=True)
class PlannedHost:
    name: str
    roles: tuple[str, ...]
    plan: HostPlan
    settings: Settings
    private_address: str  # where the rest of the fleet reaches this host
    broker: Broker  # Redis: the broker (broker: redis), the results and the rate limit
    fleet_addresses: tuple[str, ...]  # every fleet host's, reachable in this run or not
    visibility_timeout_s: int  # one value for the whole fleet (sizing.visibility_timeout)
    flower_password: str = ""  # a secret; on the broker, when Flower runs
    task_events: bool = False  # workers send task events (for Flower)
    # secrets, read from their sources (the settings keep what the inventory says: a source
    # or the key); "" where not asked for (fleet plan, fleet status) or not set
    embedding_api_key: str = ""
    llm_api_key: str = ""
    rabbitmq: RabbitmqCluster | None = None  # broker: rabbitmq
    runs_redis: bool = False  # the broker host that keeps Redis (with rabbitmq: the first)

    @property
    def broker_url(self) -> str:  # a secret: only ever written into 0600 files
        return self.rabbitmq.url if self.rabbitmq else self.broker.url

    @property
    def result_backend_url(self) -> str:  # Redis, whichever the broker
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
               secrets: Secrets | None = None) -> tuple[dict[str, PlannedHost], list[str]]:
    """({name: PlannedHost} of every reached fleet host, every problem found). Hosts not
    reached are not planned, but count where the whole fleet does (the broker's firewall, the
    API's rate limit shared by every embedding host). secrets: None plans without them (no
    password, no key: `fleet plan`, `fleet status`)."""
    fleet = [h for h in hosts if h.roles and not h.retired]
    errors: list[str] = retirement_problems(hosts)
    brokers = [h for h in fleet if "broker" in h.roles]
    kind, kind_errors = _broker_kind(fleet)
    errors += kind_errors
    if kind == "redis" and len(brokers) != 1:
        errors.append(f"the brokers group must hold exactly one host (the Redis broker), "
                      f"it holds {len(brokers)}: {', '.join(h.name for h in brokers) or 'none'}")
    if kind == "rabbitmq" and (len(brokers) not in RABBITMQ_CLUSTER_SIZES):
        errors.append(f"with broker: rabbitmq the brokers group holds 1 host, or 3, 5 or 7 for "
                      f"a cluster (quorum queues need a majority of them up: 3 survive the loss "
                      f"of one), it holds {len(brokers)}: "
                      f"{', '.join(h.name for h in brokers) or 'none'}")
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
        if kind == "rabbitmq" and "broker" in host.roles and \
                "." not in private_address(host, settings[host.name]):
            found.append(str(SettingsError(
                host.name, "private_address", private_address(host, settings[host.name]),
                "an IP address or a fully qualified name: RabbitMQ's node is named after it "
                "(rabbit@ADDRESS, Erlang long names)")))
        networks = settings[host.name]["broker_allowed_networks"]
        if networks and "broker" not in host.roles:
            found.append(str(SettingsError(host.name, "broker_allowed_networks", networks,
                                           "[] here: set it on the broker host (its firewall "
                                           "admits them)")))
        found += _gpu_endpoint_problems(host.name, settings[host.name], plan)
        errors += found
        if not bad and not found:
            plans[host.name] = plan
    if errors:
        return {}, errors

    broker_host = brokers[0]  # Redis's host
    broker_settings = settings[broker_host.name]
    password, flower_password, keys = "", "", {}
    rabbitmq = RabbitmqCluster(tuple(private_address(h, settings[h.name]) for h in brokers),
                               broker_settings["rabbitmq_port"]) if kind == "rabbitmq" else None
    if secrets is not None:
        password, errors = _broker_password(broker_host, broker_settings, secrets, fleet)
        if broker_host.name in plans and broker_settings["flower"]:
            flower_password = secrets.kept(broker_settings, flower_password_name(
                broker_host.name), may_create=True) or ""
        keys, key_errors = _api_keys(plans, settings, secrets)
        errors += key_errors
        if rabbitmq is not None:
            rabbitmq, rabbit_errors = _rabbitmq_secrets(rabbitmq, broker_host, broker_settings,
                                                        secrets)
            errors += rabbit_errors
        if errors:
            return {}, errors
    broker = Broker(private_address(broker_host, broker_settings), broker_settings["redis_port"],
                    password)
    # with RabbitMQ, Redis runs on the first broker only
    plans = {name: plan if name == broker_host.name or plan.redis is None else
             replace(plan, redis=None) for name, plan in plans.items()}
    # the broker's firewall admits the whole fleet: a worker whose SSH is down (or that this
    # run leaves out with --limit) keeps its access to Redis
    addresses = tuple(sorted({private_address(h, settings[h.name]) for h in fleet}))
    visibility = visibility_timeout([settings[name] for name in plans])
    by_name = {h.name: h for h in fleet}
    order = {name: i for i, name in enumerate(sorted(by_name))}
    return {name: PlannedHost(name, by_name[name].roles, plan, settings[name],
                              private_address(by_name[name], settings[name]), broker, addresses,
                              visibility,
                              flower_password=flower_password if name == broker_host.name
                              else "",
                              task_events=broker_settings["flower"],
                              rabbitmq=rabbitmq and replace(
                                  rabbitmq, first=order[name] % len(rabbitmq.addresses)),
                              runs_redis=name == broker_host.name, **keys.get(name, {}))
            for name, plan in plans.items()}, []


def _broker_kind(fleet: list[HostInput]) -> tuple[str, list[str]]:
    """The fleet's one broker kind: every host must say the same (or nothing)."""
    said = {h.name: h.data.get("broker", "redis") for h in fleet}
    kinds = sorted({k for k in said.values() if k in ("redis", "rabbitmq")})  # valid ones
    if len(kinds) > 1:
        by_kind = "; ".join(f"{k}: {', '.join(n for n, v in said.items() if v == k)}"
                            for k in kinds)
        return kinds[0], [f"broker differs between hosts ({by_kind}): one broker serves the "
                          "whole fleet; set broker in the inventory's data for all hosts"]
    return (kinds[0] if kinds else "redis"), []


def rabbitmq_password_name(first_broker: str) -> str:
    return f"{first_broker}.rabbitmq_password"


def erlang_cookie_name(first_broker: str) -> str:
    return f"{first_broker}.erlang_cookie"


def _rabbitmq_secrets(cluster: RabbitmqCluster, first: HostInput, settings: Settings,
                      secrets: Secrets) -> tuple[RabbitmqCluster, list[str]]:
    """The fleet user's password (set, or generated once and kept) and the Erlang cookie the
    nodes share (generated once and kept: a cluster whose cookie changed cannot talk)."""
    configured = settings["rabbitmq_password"]
    try:
        password = (secrets.read(first.name, "rabbitmq_password", configured)
                    if configured is not None else
                    secrets.kept(settings, rabbitmq_password_name(first.name), may_create=True))
    except SettingsError as error:
        return cluster, [str(error)]
    cookie = secrets.kept(settings, erlang_cookie_name(first.name), may_create=True)
    return replace(cluster, password=password or "", erlang_cookie=cookie or ""), []


def retirement_problems(hosts: list[HostInput]) -> list[str]:
    """A host in `retired` leaves the fleet whole, and never with the queues: its settings are
    checked like any host's (they say what to remove: install_dir, service_user)."""
    errors: list[str] = []
    for host in (h for h in hosts if h.retired):
        groups = [group for group, role in layout.GROUP_ROLES.items() if role in host.roles]
        if groups:
            errors.append(f"host {host.name!r} is in {layout.RETIRED_GROUP} and in "
                          f"{', '.join(groups)}: a host leaving the fleet is in no other group")
        errors += [str(error) for error in problems(host.name, host.data)]
        if host.runs_our_redis:
            errors.append(f"host {host.name!r} runs the fleet's Redis: retiring it would lose "
                          "every queued task. Move the broker first (another host in brokers, "
                          "deploy, let this Redis drain: redis-cli LLEN on each queue), then "
                          "remove Redis by hand (apt purge redis-server) and retire the host")
        if host.runs_rabbitmq:
            errors.append(f"host {host.name!r} runs RabbitMQ: retiring a broker of a cluster is "
                          "not automated (its queues' replicas live there). Take it out of "
                          "brokers and deploy, run `rabbitmqctl forget_cluster_node "
                          "rabbit@ADDRESS` on a live broker, `apt purge rabbitmq-server` on "
                          "it, then retire it (docs/BROKERS.md)")
    return errors


def _broker_password(broker: HostInput, settings: Settings, secrets: Secrets,
                     fleet: list[HostInput]) -> tuple[str, list[str]]:
    """The password every host of the run gets. A password the broker's Redis does not
    already have reaches the workers of this run only: refused where that would lock a host
    out of Redis (the broker or a worker left out of the run, or a second controller that does
    not keep the first one's generated password)."""
    configured = settings["redis_password"]
    in_run = broker.detected is not None
    current = broker.redis_password_digest
    kept_at = f"{settings['secrets_dir']}/{redis_password_name(broker.name)}"
    if configured is not None:
        try:
            password = secrets.read(broker.name, "redis_password", configured)
        except SettingsError as error:
            return "", [str(error)]
    else:
        # generated here only for a broker this run installs that requires no password yet
        password = secrets.kept(settings, redis_password_name(broker.name),
                                may_create=in_run and current is None)
        if password is None and not in_run:
            return "", [f"host {broker.name!r}: redis_password is not set and this controller "
                        f"keeps no generated password ({kept_at}), while the broker is not "
                        "part of this run (--limit, or unreachable): a new password would reach "
                        "these workers but never Redis. Deploy with the broker in the run, or "
                        "set redis_password to the broker's password (env:NAME, file:PATH or "
                        "command:CMD)"]
        if password is None:
            return "", [f"host {broker.name!r}: its Redis already requires a password this "
                        f"controller does not keep ({kept_at}); a new one would lock out every "
                        "worker and producer. Copy that file from the controller that deployed "
                        "the broker, or set redis_password to the password (env:NAME, "
                        "file:PATH or command:CMD)"]
    left_out = sorted(h.name for h in fleet if h.detected is None)
    if in_run and current is not None and password_digest(password) != current and left_out:
        return "", [f"host {broker.name!r}: this run would change the broker's Redis password, "
                    f"and {', '.join(left_out)} not part of it would lose Redis. Change it in "
                    "a run that reaches every fleet host (no --limit), or set redis_password "
                    "back to the password the broker has"]
    return password, []


def _api_keys(plans: dict[str, HostPlan], settings: dict[str, Settings], secrets: Secrets
              ) -> tuple[dict[str, dict[str, str]], list[str]]:
    """{host: {"embedding_api_key": ..., "llm_api_key": ...}} for the roles each host plays,
    read from their sources."""
    keys: dict[str, dict[str, str]] = {}
    errors: list[str] = []
    for name, plan in plans.items():
        for key, used in (("embedding_api_key", plan.embedding), ("llm_api_key", plan.llm)):
            if used is not None and settings[name][key]:
                try:
                    keys.setdefault(name, {})[key] = secrets.read(name, key, settings[name][key])
                except SettingsError as error:
                    errors.append(str(error))
    return keys, errors


def _gpu_endpoint_problems(host: str, settings: Settings, plan: HostPlan) -> list[str]:
    urls = settings["llm_gpu_api_urls"]
    gpu_instances = plan.llm.gpu_instances if plan.llm is not None else ()
    if not urls or len(urls) == len(gpu_instances):
        return []
    return [str(SettingsError(host, "llm_gpu_api_urls", urls,
                              f"one URL per GPU the LLM worker uses ({len(gpu_instances)} here: "
                              f"{', '.join(i.name for i in gpu_instances) or 'none'}), or []"))]
