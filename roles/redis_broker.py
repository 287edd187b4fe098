"""The Celery broker: Redis bound to the private address, with a password, maxmemory from the
host's RAM and policy noeviction, persistence on; a firewall of its own lets only the fleet in."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, server, systemd
from pyinfra.operations.util import any_changed

from celery_fleet import layout, render
from celery_fleet.facts import RedisState
from celery_fleet.fleetplan import PlannedHost
from celery_fleet.redis_state import needs_live_aof_switch

from .rendered import template


@deploy("Broker firewall")
def broker_firewall(h: PlannedHost) -> list:
    """The broker's own nftables table: Redis (and RabbitMQ, Flower) for the fleet only."""
    apt.packages(name="Install nftables", packages=["nftables"], update=True, cache_time=86400)
    rules = template("Render the firewall rules: only the fleet's hosts reach Redis",
                     layout.FIREWALL_RULES, mode="600", **render.redis_firewall(h))
    firewall_unit = template("Render the firewall unit", layout.unit_path(layout.FIREWALL_UNIT),
                             mode="644", **render.firewall_unit())
    systemd.daemon_reload(name="Reload systemd (a unit file changed)",
                          _if=firewall_unit.did_change)
    firewall_restart = systemd.service(
        name="Load the firewall rules again (they changed)", service=layout.FIREWALL_UNIT,
        running=True, restarted=True, _if=any_changed(rules, firewall_unit))
    firewall = systemd.service(name="Ensure the firewall rules are loaded at boot",
                               service=layout.FIREWALL_UNIT, running=True, enabled=True)
    return [rules, firewall_unit, firewall_restart, firewall]


@deploy("Redis broker")
def redis_broker(h: PlannedHost) -> list:
    """Redis: the broker (broker: redis), and the results and rate limit whichever it is."""
    before = host.get_fact(RedisState)  # read before this run changes anything
    apt.packages(name="Install Redis", packages=["redis-server"], update=True,
                 cache_time=86400)
    if needs_live_aof_switch(before):  # first, before anything of ours touches Redis
        keep_data(before)
    conf = template("Configure Redis: private address, password, maxmemory, noeviction, AOF",
                    layout.REDIS_CONF, user="redis", group="redis", mode="640",
                    **render.redis_conf(h))
    restart = systemd.service(name="Restart Redis (its configuration changed)",
                              service=layout.REDIS_UNIT, running=True, restarted=True,
                              _if=conf.did_change)
    running = systemd.service(name="Ensure Redis runs and starts at boot",
                              service=layout.REDIS_UNIT, running=True, enabled=True)
    return [conf, restart, running]


def keep_data(before: dict) -> None:
    """A Redis we adopt keeps every key: its AOF is switched on live (files/redis-aof-on)
    before our configuration, which has AOF on, restarts it (celery_fleet/redis_state.py)."""
    if not before["running"]:  # its data is in its snapshot: load it with its own settings
        systemd.service(name="Start the Redis already here with its own configuration (to "
                        "keep its data)", service=layout.REDIS_UNIT, running=True)
    server.script(name="Switch the Redis already here to AOF live, keeping its data",
                  src=str(layout.FILES_DIR / "redis-aof-on"), args=(layout.REDIS_CONF,))
