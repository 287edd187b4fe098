"""The Celery broker: Redis bound to the private address, with a password, maxmemory from the
host's RAM and policy noeviction, persistence on."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd
from pyinfra.operations.util import any_changed

from celery_fleet import render
from celery_fleet.fleet import HostDeploy

SERVICE = "redis-server.service"


@deploy("Redis broker")
def redis_broker(d: HostDeploy, fleet_addresses: list[str]) -> list:
    apt.packages(name="Install Redis and nftables", packages=["redis-server", "nftables"],
                 update=True, cache_time=86400)
    rules = files.template(
        name="Render the firewall rules: only the fleet's hosts reach Redis",
        src=str(render.TEMPLATES_DIR / "redis-firewall.nft.j2"), dest=render.FIREWALL_RULES,
        mode="600", **render.redis_firewall(d, fleet_addresses))
    firewall_unit = files.template(
        name="Render the firewall unit",
        src=str(render.TEMPLATES_DIR / f"{render.FIREWALL_UNIT}.j2"),
        dest=f"{render.UNIT_DIR}/{render.FIREWALL_UNIT}", mode="644",
        rules=render.FIREWALL_RULES)
    systemd.daemon_reload(name="Reload systemd (a unit file changed)",
                          _if=firewall_unit.did_change)
    firewall_restart = systemd.service(
        name="Load the firewall rules again (they changed)", service=render.FIREWALL_UNIT,
        running=True, restarted=True, _if=any_changed(rules, firewall_unit))
    firewall = systemd.service(name="Ensure the firewall rules are loaded at boot",
                               service=render.FIREWALL_UNIT, running=True, enabled=True)
    bind_address = d.private_address
    conf = files.template(
        name="Configure Redis: private address, password, maxmemory, noeviction, AOF",
        src=str(render.TEMPLATES_DIR / "redis.conf.j2"), dest="/etc/redis/redis.conf",
        user="redis", group="redis", mode="640", **render.redis_conf(d, bind_address))
    restart = systemd.service(name="Restart Redis (its configuration changed)", service=SERVICE,
                              running=True, restarted=True, _if=conf.did_change)
    running = systemd.service(name="Ensure Redis runs and starts at boot", service=SERVICE,
                              running=True, enabled=True)
    return [rules, firewall_unit, firewall_restart, firewall, conf, restart, running]
