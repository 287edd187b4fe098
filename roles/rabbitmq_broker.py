"""The Celery broker as RabbitMQ (broker: rabbitmq; docs/BROKERS.md): Debian's rabbitmq-server
on every host of brokers, one node named after its private address, a cluster of them sharing
a generated Erlang cookie, bound to the private address behind the fleet's firewall; a vhost
and a user for the fleet (no guest); the policy of the fleet's quorum queues. Redis stays on
the first broker for the results (roles/redis_broker.py)."""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import File
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from celery_fleet import layout, render
from celery_fleet.fleetplan import PlannedHost

from .rendered import template

# Debian starts a service as its package is installed: with a cookie and a node name of its
# own, a node that would never join the cluster (peer discovery runs on a node's first start
# only). Installed with invoke-rc.d told not to start anything (policy-rc.d, exit 101), it
# first starts with the fleet's configuration.
POLICY_RC_D = "/usr/sbin/policy-rc.d"


@deploy("RabbitMQ broker")
def rabbitmq_broker(h: PlannedHost) -> list:
    """After the broker's firewall (roles/redis_broker.py): RabbitMQ listens behind it."""
    cluster = h.rabbitmq
    fresh = "rabbitmq-server" not in host.get_fact(DebPackages)
    if fresh:
        server.shell(name="Install RabbitMQ without starting it (it first starts configured)",
                     commands=[f"printf '#!/bin/sh\\nexit 101\\n' > {POLICY_RC_D} && "
                               f"chmod 755 {POLICY_RC_D} && apt-get update -qq && "
                               "DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                               f"rabbitmq-server; status=$?; rm -f {POLICY_RC_D}; "
                               "exit $status"])
    env = template("Name the RabbitMQ node after the private address (Erlang long names)",
                   layout.RABBITMQ_ENV_CONF, user="rabbitmq", group="rabbitmq", mode="644",
                   **render.rabbitmq_env(h))
    conf = template("Configure RabbitMQ: private address, cluster, memory, disk, consumer "
                    "timeout", layout.RABBITMQ_CONF, user="rabbitmq", group="rabbitmq",
                    mode="640", **render.rabbitmq_conf(h))
    cookie = files.put(name="Install the cluster's Erlang cookie (generated once, kept on the "
                       "controller)", src=StringIO(cluster.erlang_cookie),
                       dest=layout.RABBITMQ_COOKIE, user="rabbitmq", group="rabbitmq",
                       mode="400")
    definitions = files.put(name="Render the fleet's vhost, user (password hashed), "
                            "permissions and queue policy (0600, rabbitmq)",
                            src=StringIO(render.rabbitmq_definitions(h)),
                            dest=layout.RABBITMQ_DEFINITIONS, user="rabbitmq", group="rabbitmq",
                            mode="600")
    files.put(name="Install rabbitmq-setup (cluster, vhost, user, policy)",
              src=str(layout.FILES_DIR / "rabbitmq-setup"), dest=layout.RABBITMQ_SETUP,
              mode="755")
    if fresh:
        # every new broker at once: on its first start a node waits for the seed (the first
        # broker) to join it (RabbitMQ 4: indefinitely), so starting them one after another
        # could wait on a seed that starts later
        restart = systemd.service(name="Start RabbitMQ for the first time (the brokers at "
                                  "once: they form the cluster)", service=layout.RABBITMQ_UNIT,
                                  running=True)
    else:
        # one node at a time: the others keep the quorum queues' majority meanwhile
        restart = systemd.service(name="Restart RabbitMQ (its configuration changed), one "
                                  "broker at a time", service=layout.RABBITMQ_UNIT, running=True,
                                  restarted=True, _if=any_changed(env, conf, cookie),
                                  _serial=True)
    running = systemd.service(name="Ensure RabbitMQ runs and starts at boot",
                              service=layout.RABBITMQ_UNIT, running=True, enabled=True)
    node, seed = layout.rabbitmq_node(h.private_address), cluster.nodes[0]
    joined = server.shell(name=f"Join the cluster of {seed} (once, a fresh node only)",
                          commands=[f"{layout.RABBITMQ_SETUP} join {node} {seed}"],
                          _if=any_changed(env, conf, cookie))
    # users, vhosts and policies are the cluster's: set on the first broker, once all run
    setup = []
    if node == seed:
        setup.append(server.shell(
            name="Set up the fleet's vhost, user (no guest) and quorum queue policy",
            commands=[f"{layout.RABBITMQ_SETUP} fleet {node} {layout.RABBITMQ_DEFINITIONS}"],
            _if=any_changed(env, conf, cookie, definitions)))
    server.shell(name="Check the cluster: every planned broker runs, no memory or disk alarm",
                 commands=[" ".join([layout.RABBITMQ_SETUP, "check", node, *cluster.nodes])],
                 _if=any_changed(env, conf, cookie, definitions, restart))
    return [env, conf, cookie, definitions, restart, running, joined, *setup]


@deploy("RabbitMQ from a worker")
def rabbitmq_from_worker(h: PlannedHost, env_file: str, when: list) -> None:
    """What needs a Celery client (a worker's Python; the brokers run no Python of ours): the
    dead-letter queue, and the tasks a fleet that used Redis left in its queues."""
    python = f"{layout.worker_venv(h.settings['install_dir'])}/bin/python"
    for script in ("rabbitmq-dead-letter", "fleet-move-queues"):
        files.put(name=f"Install {script}", src=str(layout.FILES_DIR / script),
                  dest=f"{layout.HELPER_DIR}/{script}", mode="644")
    server.shell(name=f"Declare the dead-letter exchange and queue {layout.RABBITMQ_DEAD_LETTER}",
                 commands=[f"{layout.ENV_EXEC} {env_file} {python} "
                           f"{layout.HELPER_DIR}/rabbitmq-dead-letter "
                           f"{layout.RABBITMQ_DEAD_LETTER}"],
                 _if=any_changed(*when))
    # a fleet switching from Redis: its workers consume RabbitMQ now; what waited in Redis
    # moves over (nothing, on any later run). Run as the service user, with its settings.
    queues = " ".join(sorted(set(h.settings["embedding_queues"]) | set(h.settings["llm_queues"])))
    server.shell(name="Move tasks left in Redis's queues to RabbitMQ (a fleet that used Redis)",
                 commands=[f"{layout.ENV_EXEC} {env_file} {python} "
                           f"{layout.HELPER_DIR}/fleet-move-queues {queues}"],
                 _sudo_user=h.settings["service_user"], _if=any_changed(*when))


def celery_settings_module(h: PlannedHost) -> list:
    """Celery's settings for quorum queues where a Celery app runs (workers, producers); the
    .env files name it (CELERY_CONFIG_MODULE). None with Redis."""
    path = f"{layout.PYTHON_DIR}/{layout.RABBITMQ_CELERY_CONFIG_MODULE}.py"
    if h.rabbitmq is None:
        if host.get_fact(File, path=path):
            files.file(name=f"Remove {path} (the broker is Redis)", path=path, present=False)
        return []
    files.directory(name="Ensure the Python settings directory exists", path=layout.PYTHON_DIR,
                    user="root", group="root", mode="755")
    return [template("Render Celery's settings for RabbitMQ's quorum queues", path,
                     mode="644", **render.celery_rabbitmq_settings(h))]
