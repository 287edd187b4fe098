"""The Celery broker: Redis bound to the private address, with a password, maxmemory from the
host's RAM and policy noeviction, persistence on."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from celery_fleet import render
from celery_fleet.fleet import HostDeploy

SERVICE = "redis-server.service"


@deploy("Redis broker")
def redis_broker(d: HostDeploy, bind_address: str) -> list:
    apt.packages(name="Install Redis", packages=["redis-server"], update=True,
                 cache_time=86400)
    conf = files.template(
        name="Configure Redis: private address, password, maxmemory, noeviction, AOF",
        src=str(render.TEMPLATES_DIR / "redis.conf.j2"), dest="/etc/redis/redis.conf",
        user="redis", group="redis", mode="640", **render.redis_conf(d, bind_address))
    restart = systemd.service(name="Restart Redis (its configuration changed)", service=SERVICE,
                              running=True, restarted=True, _if=conf.did_change)
    running = systemd.service(name="Ensure Redis runs and starts at boot", service=SERVICE,
                              running=True, enabled=True)
    return [conf, restart, running]
