"""The fleet's names and layout, defined once: where things live on the hosts and on the
controller, what units, Celery nodes and queues are called, which packages are pinned, and
which worker processes a plan runs (`planned_workers`). Pure: no pyinfra, no I/O.

Roles, the rendered files, `fleet status` and the post-deploy checks all import these; the
worker application (worker/fleet_worker, installed on the hosts, which cannot import this
package) repeats a few of them, and tests/test_agreement.py checks that both sides agree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:  # settings.py takes its defaults from here, and sizing.py imports settings
    from .sizing import HostPlan

# ---- on the controller --------------------------------------------------------------------
PROJECT_DIR = Path(__file__).resolve().parents[1]
TEMPLATES_DIR = PROJECT_DIR / "templates"
FILES_DIR = PROJECT_DIR / "files"

# ---- inventory groups -> roles of the plan ------------------------------------------------
# celery_clients: hosts of yours that submit tasks (a web app, a cron host): the broker admits
# them and they get Celery's settings in CLIENT_ENV
GROUP_ROLES = {"brokers": "broker", "embedding_workers": "embedding", "llm_workers": "llm",
               "celery_clients": "client"}
# a host leaving the fleet: everything of ours is removed from it (roles/retire.py)
RETIRED_GROUP = "retired"

# ---- paths on the hosts -------------------------------------------------------------------
CONFIG_DIR = "/etc/celery-fleet"
UNIT_DIR = "/etc/systemd/system"
HELPER_DIR = "/usr/local/lib/celery-fleet"
ENV_EXEC = f"{HELPER_DIR}/env-exec"  # runs a command with a worker's .env (files/env-exec)
# what `fleet status` runs on a worker host, with the worker venv's Python, for any Celery app
HOSTSTATUS = f"{HELPER_DIR}/fleet-hoststatus"  # files/fleet-hoststatus
# the endpoint probe (files/fleet-probe, standard library only): `fleet tune` runs it
PROBE = f"{HELPER_DIR}/fleet-probe"
EMBEDDING_ENV = f"{CONFIG_DIR}/embedding-worker.env"
LLM_ENV = f"{CONFIG_DIR}/llm-worker.env"
# Outside CONFIG_DIR (which only the service user may enter): your app's user reads it
CLIENT_ENV = "/etc/celery-fleet-client.env"
REDIS_CONF = "/etc/redis/redis.conf"
CA_CERT_DIR = "/usr/local/share/ca-certificates"
CA_CERT_PREFIX = "celery-fleet-"  # extra_ca_certificates land as celery-fleet-NAME.crt


def worker_venv(install_dir: str) -> str:
    return f"{install_dir}/venv"


def flower_venv(install_dir: str) -> str:
    return f"{install_dir}/flower-venv"


def wheel_dir(install_dir: str, digest: str) -> str:
    return f"{install_dir}/wheels/{digest}"


def installed_marker(venv: str) -> str:
    """What was pip-installed in a virtualenv, as a digest: nothing to do when it matches."""
    return f"{venv}/.celery-fleet-installed"


def llm_instance_env(instance: str) -> str:
    return f"{CONFIG_DIR}/llm-worker@{instance}.env"


def llm_server_venv(install_dir: str) -> str:
    """The inference server's own virtualenv: its packages never meet the worker app's."""
    return f"{install_dir}/llm-server"


def llm_server_instance_env(instance: str) -> str:
    return f"{CONFIG_DIR}/llm-server@{instance}.env"


# celery-fleet's data on a host: the models uploaded from the controller (llm_model_path),
# readable by the service user
DATA_DIR = "/var/lib/celery-fleet"
MODEL_DIR = f"{DATA_DIR}/models"
# the inference servers' CacheDirectory= (one per instance below it), under /var/cache
LLM_SERVER_CACHE = "celery-fleet-llm-server"


# ---- systemd units ------------------------------------------------------------------------
EMBEDDING_UNIT = "celery-embedding-worker@.service"  # template: @1 ... @N, one per process
LLM_UNIT = "celery-llm-worker@.service"  # template: @cpu, or @gpu0 ... one per GPU
EMBEDDING_PREFIX = EMBEDDING_UNIT.split("@")[0] + "@"
LLM_PREFIX = LLM_UNIT.split("@")[0] + "@"
# ---- RabbitMQ (broker: rabbitmq; docs/BROKERS.md) ------------------------------------------
RABBITMQ_UNIT = "rabbitmq-server.service"  # Debian's
RABBITMQ_CONF = "/etc/rabbitmq/rabbitmq.conf"
RABBITMQ_ENV_CONF = "/etc/rabbitmq/rabbitmq-env.conf"
RABBITMQ_COOKIE = "/var/lib/rabbitmq/.erlang.cookie"  # the nodes of a cluster share it
# the fleet's vhost, user (its password as a salted hash), permissions and queue policy, for
# `rabbitmqctl import_definitions` (readable by the rabbitmq user only: the CLI runs as it)
RABBITMQ_DEFINITIONS = "/etc/rabbitmq/celery-fleet-definitions.json"
RABBITMQ_SETUP = f"{HELPER_DIR}/rabbitmq-setup"  # files/rabbitmq-setup: vhost, user, policy
RABBITMQ_VHOST = "celery-fleet"
RABBITMQ_USER = "celery-fleet"
# Erlang distribution between the cluster's nodes: epmd, the one inter-node port (fixed, so
# the firewall can name it: RabbitMQ's default, 20000 + the AMQP port), the CLI tools' range
EPMD_PORT = 4369
RABBITMQ_DIST_PORT_OFFSET = 20000
RABBITMQ_CLI_PORTS = (35672, 35682)
# A message delivered this many times without an ack (a task that kills its worker each time)
# goes to the dead-letter queue instead of being dropped: RabbitMQ 4's default limit for
# quorum queues is 20 and it then drops the message; 3.10 has none (it would loop forever).
RABBITMQ_DELIVERY_LIMIT = 20
RABBITMQ_DEAD_LETTER = "celery-fleet.dead-letter"  # the exchange and its one quorum queue
# Celery's settings for quorum queues, for any application: loaded through
# CELERY_CONFIG_MODULE from this directory (templates/celery_fleet_rabbitmq.py.j2)
PYTHON_DIR = f"{HELPER_DIR}/python"
RABBITMQ_CELERY_CONFIG_MODULE = "celery_fleet_rabbitmq"


def amqp_url(password: str, address: str, port: int) -> str:
    return (f"amqp://{RABBITMQ_USER}:{quote(password, safe='')}@{address}:{port}/"
            f"{RABBITMQ_VHOST}")


def rabbitmq_node(address: str) -> str:
    """A node's name: its private address, with Erlang long names (no DNS or /etc/hosts
    entries between brokers; RABBITMQ_USE_LONGNAME)."""
    return f"rabbit@{address}"


# the inference server of an LLM worker instance: @cpu (or @cpu0 ... one per slot), @gpu0 ...
LLM_SERVER_UNIT = "celery-fleet-llm-server@.service"
LLM_SERVER_PREFIX = LLM_SERVER_UNIT.split("@")[0] + "@"
WORKER_UNIT_GLOB = "celery-*-worker@*.service"
REDIS_UNIT = "redis-server.service"  # Debian's
FIREWALL_UNIT = "celery-fleet-redis-firewall.service"
FIREWALL_RULES = f"{CONFIG_DIR}/redis-firewall.nft"
FIREWALL_TABLE = "celery_fleet_redis"  # nftables table of its own: other rules stay
FLOWER_UNIT = "celery-fleet-flower.service"
FLOWER_ENV = f"{CONFIG_DIR}/flower.env"
FLOWER_USER = "flower"  # the login of Flower's basic auth
FAKE_OPENAI_UNIT = "celery-fleet-fake-openai.service"
FAKE_OPENAI_SCRIPT = f"{HELPER_DIR}/fake-openai-server"
REDIS_AOF_ON = f"{HELPER_DIR}/redis-aof-on"  # files/redis-aof-on: AOF on, live, data kept
FAKE_OPENAI_PORT = 8080
SANDBOX_DROPIN = "hardening.conf"
# All the workers of a host as one service: `systemctl status|stop|restart celery-worker`
WORKER_GROUP_UNIT = "celery-worker.service"
WORKER_STATES = f"{HELPER_DIR}/worker-states"  # files/worker-states: what its status shows


def embedding_unit_name(instance: str) -> str:
    return f"{EMBEDDING_PREFIX}{instance}.service"


def llm_unit_name(instance: str) -> str:
    return f"{LLM_PREFIX}{instance}.service"


def llm_server_unit_name(instance: str) -> str:
    return f"{LLM_SERVER_PREFIX}{instance}.service"


def unit_path(unit: str) -> str:
    return f"{UNIT_DIR}/{unit}"


def dropin_dir(unit: str) -> str:
    return f"{UNIT_DIR}/{unit}.d"


# ---- Celery -------------------------------------------------------------------------------
# Queues of the reference worker application (worker/fleet_worker/app.py routes its tasks so):
# the defaults of the embedding_queues and llm_queues settings
EMBEDDING_QUEUE = "embeddings"
LLM_QUEUE = "llm"
# Celery node names: "<kind>-<instance>@<hostname>", as `celery inspect` shows them
EMBEDDING_NODE = "embedding"
LLM_NODE = "llm"


def node_prefix(kind: str, instance: str) -> str:
    """The node name before the host name: embedding-1@, llm-gpu0@."""
    return f"{kind}-{instance}@"


def unit_node_name(kind: str) -> str:
    """The same name in a template unit (%i the instance, %H the host name)."""
    return node_prefix(kind, "%i") + "%H"


# Celery's pool implementation (celery inspect stats) -> the pool name the plan uses
POOL_IMPLEMENTATIONS = {
    "celery.concurrency.gevent:TaskPool": "gevent",
    "celery.concurrency.thread:TaskPool": "threads",
    "celery.concurrency.prefork:TaskPool": "prefork",
    "celery.concurrency.solo:TaskPool": "solo",
}

# Exit status with which the worker app asks to be restarted: its memory watch's warm restart
# (fleet_worker.memory.EXIT_RECYCLE, EX_TEMPFAIL). The units restart on it.
EXIT_RECYCLE = 75

# ---- pinned packages ----------------------------------------------------------------------
CELERY_VERSION = "5.7.0"
GEVENT_VERSION = "26.9.0"
# Installed in every worker virtualenv with the application: the default of the
# worker_requirements setting (worker/pyproject.toml pins the same: tests/test_agreement.py)
WORKER_BASE_REQUIREMENTS = (f"celery[redis]=={CELERY_VERSION}", f"gevent=={GEVENT_VERSION}")
# What fleet-hoststatus needs beside Celery, installed whatever the application
STATUS_REQUIREMENTS = ("psutil>=5.9", "nvidia-ml-py>=12")
# kombu's redis extra spelled out: pyinfra's pip.packages compares names, so "celery[redis]"
# counts as installed once flower brought celery, and the extra never comes. One specifier
# each: pyinfra 3.10 takes a requirement with two ("redis>=6.4.0,<9") for a package name, finds
# it never installed and reinstalls Flower on every deploy (tests/test_roles.py saw it).
# redis 8.1.0 is inside kombu 5.7.0's range for its redis extra (>=6.4.0,<9.0.0).
FLOWER_REQUIREMENTS = ("flower==2.2.0", f"celery=={CELERY_VERSION}", "redis==8.1.0",
                       "packaging==26.3")

# The inference servers (llm_server_source's defaults). llama-cpp-python has no wheel on PyPI:
# it is built once on the controller (celery_fleet/wheel.py); vLLM's wheels are on PyPI.
LLAMACPP_REQUIREMENT = "llama-cpp-python==0.3.36"
LLAMACPP_EXTRAS = "[server]"  # its OpenAI-compatible server (FastAPI, uvicorn)
VLLM_REQUIREMENT = "vllm==0.33.0"
# llama.cpp's build for every host, not for the controller's CPU (GGML_NATIVE=OFF, which alone
# gives SSE only): x86-64-v3 (AVX2, FMA, F16C, BMI2; Intel Haswell 2013, AMD Zen and later).
# A host whose CPU lacks one of these flags is refused before any change (it would die of
# SIGILL). Tests and examples are not built: the server needs the library only.
LLAMACPP_CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON "
                       "-DGGML_F16C=ON -DGGML_BMI2=ON -DLLAMA_BUILD_TESTS=OFF "
                       "-DLLAMA_BUILD_EXAMPLES=OFF")
LLAMACPP_CPU_FLAGS = ("avx", "avx2", "fma", "f16c", "bmi2")
# the controller's caches: outside the project, so every checkout shares them. The server's
# wheel, by requirement and flags; the models' sha256, by path, size and mtime
CONTROLLER_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "celery-fleet"
SERVER_WHEEL_CACHE = CONTROLLER_CACHE / "server-wheels"
MODEL_DIGEST_CACHE = CONTROLLER_CACHE / "model-sha256"

# ---- Redis --------------------------------------------------------------------------------
# Commands neither Celery, kombu nor the application send, that wipe, reconfigure, stop or
# spy on the broker (MONITOR shows every command, passwords included): renamed to nothing.
REDIS_DISABLED_COMMANDS = ("FLUSHALL", "FLUSHDB", "CONFIG", "DEBUG", "SHUTDOWN", "MODULE",
                           "KEYS", "MONITOR", "REPLICAOF", "SLAVEOF", "MIGRATE", "SWAPDB")
REDIS_DB = 0


def redis_url(password: str, address: str, port: int) -> str:
    # quoted: a password from a password manager may hold @ / # % ?; kombu and redis-py
    # unquote it (kombu.utils.url.url_to_parts)
    return f"redis://:{quote(password, safe='')}@{address}:{port}/{REDIS_DB}"


# ---- the worker processes of a plan -------------------------------------------------------
@dataclass(frozen=True)
class PlannedWorker:
    """One worker process a plan runs: what the checks and `fleet status` compare against."""
    unit: str
    node_prefix: str  # Celery node name before @hostname
    env_file: str  # its settings (the broker URL among them)
    pool: str
    concurrency: int
    memory_max_mb: int
    gpu_index: int | None = None


def planned_workers(plan: HostPlan) -> list[PlannedWorker]:
    workers = []
    if plan.embedding:
        e = plan.embedding
        workers += [PlannedWorker(embedding_unit_name(instance),
                                  node_prefix(EMBEDDING_NODE, instance), EMBEDDING_ENV, e.pool,
                                  e.concurrency, e.memory_max_mb)
                    for instance in e.instances]
    if plan.llm:
        workers += [PlannedWorker(llm_unit_name(i.name), node_prefix(LLM_NODE, i.name), LLM_ENV,
                                  plan.llm.pool, i.concurrency, plan.llm.memory_max_mb,
                                  i.gpu_index)
                    for i in plan.llm.instances]
    return workers
