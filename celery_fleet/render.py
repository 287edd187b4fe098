"""What each rendered file says: template variables computed from a host's plan (pure).

One function per template; the templates only substitute these values and wrap optional
lines in `{% if %}`. `render()` is what the tests use to render a file without pyinfra.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from .fleet import HostDeploy, env_quote
from .sizing import (EMBEDDING_PREFETCH_MULTIPLIER, HostPlan, memory_high_mb,
                     memory_recycle_mb)

# Exit status with which the worker app asks to be restarted: its memory watch's warm restart
# (fleet_worker.memory.EXIT_RECYCLE). The units restart on it (RestartForceExitStatus=).
EXIT_RECYCLE = 75

PROJECT_DIR = Path(__file__).resolve().parents[1]
TEMPLATES_DIR = PROJECT_DIR / "templates"
FILES_DIR = PROJECT_DIR / "files"

CONFIG_DIR = "/etc/celery-fleet"
UNIT_DIR = "/etc/systemd/system"
ENV_EXEC = "/usr/local/lib/celery-fleet/env-exec"
EMBEDDING_UNIT = "celery-embedding-worker@.service"
LLM_UNIT = "celery-llm-worker@.service"
# Inside the lab (and containers without CAP_SYS_RESOURCE) systemd clamps LimitNOFILE above
# ~20000 silently (LAB.md); a gevent worker needs one socket per task in flight plus Redis's.
OPEN_FILES = 16384
# Stopping a worker waits for its running tasks (warm shutdown) up to their time limit, plus
# this for Celery to ack, close connections and exit.
STOP_MARGIN_S = 60
# The fleet-wide token bucket hands out one request at a time, evenly spaced: bursts are what
# an API's own bucket answers with 429s.
EMBEDDING_RATE_BURST = 1
# Installed in every worker virtualenv, whatever application the inventory names.
WORKER_BASE_REQUIREMENTS = ("celery[redis]==5.7.0", "gevent==26.9.0")

# Celery's pool implementation (celery inspect stats) -> the pool name the plan uses
POOL_IMPLEMENTATIONS = {
    "celery.concurrency.gevent:TaskPool": "gevent",
    "celery.concurrency.thread:TaskPool": "threads",
    "celery.concurrency.prefork:TaskPool": "prefork",
    "celery.concurrency.solo:TaskPool": "solo",
}


def embedding_unit_name(instance: str) -> str:
    return f"celery-embedding-worker@{instance}.service"


def llm_unit_name(instance: str) -> str:
    return f"celery-llm-worker@{instance}.service"


# Commands neither Celery, kombu nor the application send, that wipe, reconfigure, stop or
# spy on the broker (MONITOR shows every command, passwords included): renamed to nothing.
REDIS_DISABLED_COMMANDS = ("FLUSHALL", "FLUSHDB", "CONFIG", "DEBUG", "SHUTDOWN", "MODULE",
                           "KEYS", "MONITOR", "REPLICAOF", "SLAVEOF", "MIGRATE", "SWAPDB")
FIREWALL_UNIT = "celery-fleet-redis-firewall.service"
FIREWALL_RULES = f"{CONFIG_DIR}/redis-firewall.nft"


def redis_firewall(d: HostDeploy, fleet_addresses: list[str]) -> dict:
    fleet = set(fleet_addresses) | {"127.0.0.1"}
    return {"port": d.settings["redis_port"], "allowed": ", ".join(sorted(fleet)),
            "flower_port": d.settings["flower_port"] if d.settings["flower"] else None,
            "flower_allowed": ", ".join(sorted(fleet | set(d.settings["flower_allowed_networks"])))}


# Flower, on the broker host when the inventory says `flower: true`
FLOWER_UNIT = "celery-fleet-flower.service"
FLOWER_ENV = f"{CONFIG_DIR}/flower.env"
# kombu's redis extra spelled out: pyinfra's pip.packages compares names, so "celery[redis]"
# counts as installed once flower brought celery, and the extra never comes
FLOWER_REQUIREMENTS = ("flower==2.2.0", "celery==5.7.0", "redis>=6.4.0,<9",
                       "packaging==26.3")


def flower_venv(d: HostDeploy) -> str:
    return f"{d.settings['install_dir']}/flower-venv"


def flower_unit(d: HostDeploy) -> dict:
    return {"venv": flower_venv(d), "address": d.private_address,
            "port": d.settings["flower_port"], "env_file": FLOWER_ENV}


def flower_env(d: HostDeploy) -> dict:
    # secrets in the environment, never on the command line (`ps` shows it to every user)
    return {"broker_url": env_quote(d.broker_url), "basic_auth": env_quote(d.flower_auth)}


def redis_conf(d: HostDeploy, bind_address: str) -> dict:
    password = d.broker_url.split(":", 2)[2].split("@", 1)[0]
    return {
        "bind_addresses": " ".join(dict.fromkeys(["127.0.0.1", bind_address])),
        "port": d.settings["redis_port"],
        "password": password,
        "maxmemory_mb": d.plan.redis.maxmemory_mb,
        "maxmemory_policy": d.plan.redis.maxmemory_policy,
        "maxmemory_reason": d.plan.redis.reasons[0],
        "disabled_commands": "\n".join(f'rename-command {c} ""' for c in REDIS_DISABLED_COMMANDS),
    }


def _common(d: HostDeploy, time_limit_s: int, memory_max_mb: int, pool: str,
            concurrency: int) -> dict:
    recycle = memory_recycle_mb(memory_max_mb)
    return {
        "service_user": d.settings["service_user"],
        "install_dir": d.settings["install_dir"],
        "config_dir": CONFIG_DIR,
        "app_module": d.settings["worker_app_module"],
        "timeout_stop_s": time_limit_s + STOP_MARGIN_S,
        "memory_max_mb": memory_max_mb,
        "memory_high_mb": memory_high_mb(memory_max_mb),
        "exit_recycle": EXIT_RECYCLE,
        # prefork: Celery replaces a child above its share after the child's task
        "max_memory_per_child_kb": recycle * 1024 // concurrency if pool == "prefork" else 0,
    }


def memory_env(memory_max_mb: int) -> dict:
    return {"memory_recycle_mb": env_quote(memory_recycle_mb(memory_max_mb))}


def embedding_unit(d: HostDeploy) -> dict:
    plan = d.plan.embedding
    return dict(_common(d, d.settings["embedding_task_time_limit_s"], plan.memory_max_mb,
                        plan.pool, plan.concurrency),
                pool=plan.pool, concurrency=plan.concurrency, processes=plan.processes,
                max_tasks_per_child=plan.max_tasks_per_child,
                recycle_children=plan.pool == "prefork", open_files=OPEN_FILES)


def embedding_env(d: HostDeploy) -> dict:
    plan, s = d.plan.embedding, d.settings
    return {
        **memory_env(plan.memory_max_mb),
        "broker_url": env_quote(d.broker_url),
        "pool": env_quote(plan.pool),
        "concurrency": env_quote(plan.concurrency),
        "prefetch_multiplier": env_quote(EMBEDDING_PREFETCH_MULTIPLIER),
        "task_events": env_quote(int(d.task_events)),
        "task_time_limit_s": env_quote(s["embedding_task_time_limit_s"]),
        "visibility_timeout_s": env_quote(d.visibility_timeout_s),
        "api_url": env_quote(s["embedding_api_url"]),
        "model": env_quote(s["embedding_model"]),
        "api_key": env_quote(s["embedding_api_key"]),
        # the API's limit, enforced fleet-wide by the application (fleet_worker/ratelimit.py)
        "rate_limit_per_s": env_quote(round((s["embedding_rate_limit_per_min"] or 0) / 60, 4)),
        "rate_burst": env_quote(EMBEDDING_RATE_BURST),
    }


def llm_unit(d: HostDeploy) -> dict:
    plan = d.plan.llm
    # one unit template for every instance: prefork runs on CPU only, with one instance
    return dict(_common(d, d.settings["llm_task_time_limit_s"], plan.memory_max_mb, plan.pool,
                        plan.concurrency), device=plan.device, pool=plan.pool)


def hardening(unit: str, gpu: bool) -> dict:
    return {"unit": unit, "gpu": gpu}


def dropin_dir(unit_template: str) -> str:
    return f"{UNIT_DIR}/{unit_template}.d"


def llm_env(d: HostDeploy) -> dict:
    s = d.settings
    return {
        **memory_env(d.plan.llm.memory_max_mb),
        "broker_url": env_quote(d.broker_url),
        "pool": env_quote(d.plan.llm.pool),
        "task_events": env_quote(int(d.task_events)),
        "task_time_limit_s": env_quote(s["llm_task_time_limit_s"]),
        "visibility_timeout_s": env_quote(d.visibility_timeout_s),
        "api_url": env_quote(s["llm_api_url"]),
        "model": env_quote(s["llm_model"]),
    }


def llm_instance_env(d: HostDeploy, instance_name: str) -> dict:
    instance = next(i for i in d.plan.llm.instances if i.name == instance_name)
    return {"instance": instance.name, "concurrency": env_quote(instance.concurrency),
            "threads": env_quote(instance.threads), "gpu_index": instance.gpu_index}


FAKE_OPENAI_UNIT = "celery-fleet-fake-openai.service"
FAKE_OPENAI_SCRIPT = "/usr/local/lib/celery-fleet/fake-openai-server"
FAKE_OPENAI_PORT = 8080


def fake_openai_unit(d: HostDeploy) -> dict:
    return {"script": FAKE_OPENAI_SCRIPT, "port": FAKE_OPENAI_PORT,
            "latency_ms": d.settings["fake_openai_latency_ms"],
            "completion_cpu_ms": d.settings["fake_openai_completion_cpu_ms"]}


def planned_workers(plan: HostPlan) -> list[dict]:
    """Each worker process the plan runs: its unit, Celery node name (before @hostname), the
    pool and concurrency it must report, and its memory ceiling."""
    workers = []
    if plan.embedding:
        for instance in plan.embedding.instances:
            workers.append({"unit": embedding_unit_name(instance),
                            "node_prefix": f"embedding-{instance}@",
                            "env_file": f"{CONFIG_DIR}/embedding-worker.env",
                            "pool": plan.embedding.pool,
                            "concurrency": plan.embedding.concurrency,
                            "memory_max_mb": plan.embedding.memory_max_mb})
    if plan.llm:
        for instance in plan.llm.instances:
            workers.append({"unit": llm_unit_name(instance.name),
                            "node_prefix": f"llm-{instance.name}@",
                            "env_file": f"{CONFIG_DIR}/llm-worker.env",
                            "pool": plan.llm.pool, "concurrency": instance.concurrency,
                            "memory_max_mb": plan.llm.memory_max_mb,
                            "gpu_index": instance.gpu_index})
    return workers


def render(template: str, variables: dict) -> str:
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
                                     undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return environment.get_template(template).render(**variables)
