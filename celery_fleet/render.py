"""What each rendered file says: template variables computed from a planned host (pure).

One function per template, each taking the PlannedHost (celery_fleet/fleetplan.py); the
templates only substitute these values and wrap optional lines in `{% if %}`. Names and paths
come from celery_fleet/layout.py. `render()` is what the tests use to render a file without
pyinfra.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

import jinja2

from . import layout
from .fleetplan import PlannedHost
from .sizing import (EMBEDDING_PREFETCH_MULTIPLIER, OPEN_FILES, memory_high_mb,
                     memory_recycle_mb)

# Stopping a worker waits for its running tasks (warm shutdown) up to their time limit, plus
# this for Celery to ack, close connections and exit.
STOP_MARGIN_S = 60
# The fleet-wide token bucket hands out one request at a time, evenly spaced: bursts are what
# an API's own bucket answers with 429s.
EMBEDDING_RATE_BURST = 1
# The LLM worker takes one message per task slot: a generation runs for seconds to minutes,
# and a message held back in one worker's window waits while another worker is idle.
LLM_PREFETCH_MULTIPLIER = 1


def env_quote(value) -> str:
    """A value for a .env file that systemd's EnvironmentFile= and env-exec read alike."""
    return json.dumps(str(value))


def redis_firewall(h: PlannedHost) -> dict:
    s = h.settings
    fleet = set(h.fleet_addresses) | {"127.0.0.1"}
    rabbitmq = h.rabbitmq
    return {"table": layout.FIREWALL_TABLE, "port": s["redis_port"],
            "allowed": ", ".join(sorted(fleet | set(s["broker_allowed_networks"]))),
            "flower_port": s["flower_port"] if s["flower"] else None,
            "flower_allowed": ", ".join(sorted(fleet | set(s["flower_allowed_networks"]))),
            "rabbitmq_port": rabbitmq.port if rabbitmq else None,
            "cluster_ports": ", ".join(str(p) for p in _rabbitmq_cluster_ports(rabbitmq))
            if rabbitmq else "",
            "brokers": ", ".join(sorted(set(rabbitmq.addresses) | {"127.0.0.1"}))
            if rabbitmq else ""}


def _rabbitmq_cluster_ports(rabbitmq) -> list:
    low, high = layout.RABBITMQ_CLI_PORTS
    return [layout.EPMD_PORT, rabbitmq.port + layout.RABBITMQ_DIST_PORT_OFFSET, f"{low}-{high}"]


def firewall_unit() -> dict:
    return {"rules": layout.FIREWALL_RULES, "table": layout.FIREWALL_TABLE,
            "redis_unit": layout.REDIS_UNIT, "rabbitmq_unit": layout.RABBITMQ_UNIT}


def rabbitmq_conf(h: PlannedHost) -> dict:
    plan, cluster = h.plan.rabbitmq, h.rabbitmq
    return {"address": h.private_address, "port": cluster.port,
            "dist_port": cluster.port + layout.RABBITMQ_DIST_PORT_OFFSET,
            "nodes": cluster.nodes, "memory_watermark_mb": plan.memory_watermark_mb,
            "memory_reason": plan.reasons[0], "disk_free_limit_mb": plan.disk_free_limit_mb,
            "disk_reason": plan.reasons[1], "consumer_timeout_s": h.visibility_timeout_s}


def rabbitmq_env(h: PlannedHost) -> dict:
    return {"node": layout.rabbitmq_node(h.private_address)}


def rabbitmq_definitions(h: PlannedHost) -> str:
    """The fleet's vhost, user, permissions and quorum queue policy as RabbitMQ definitions
    (`rabbitmqctl import_definitions`): the password only as its salted SHA-256 hash, and no
    secret on any command line (rabbitmqctl add_user reads a password from its arguments, or
    from a terminal: RabbitMQ 4's CLI waits for one on stdin under su)."""
    pattern = "^(" + "|".join(re.escape(q) for q in _fleet_queues(h)) + ")$"
    vhost, user = layout.RABBITMQ_VHOST, layout.RABBITMQ_USER
    return json.dumps({
        "vhosts": [{"name": vhost}],
        "users": [{"name": user, "password_hash": rabbitmq_password_hash(h.rabbitmq.password),
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []}],
        "permissions": [{"user": user, "vhost": vhost, "configure": ".*", "write": ".*",
                         "read": ".*"}],
        # after the delivery limit a message goes to the dead-letter exchange, not away
        "policies": [{"vhost": vhost, "name": "celery-fleet-quorum", "pattern": pattern,
                      "apply-to": "queues", "priority": 10,
                      "definition": {"dead-letter-exchange": layout.RABBITMQ_DEAD_LETTER,
                                     "delivery-limit": layout.RABBITMQ_DELIVERY_LIMIT}}],
    }, indent=2, sort_keys=True) + "\n"


def rabbitmq_password_hash(password: str) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password)), with
    a 4-byte salt. The salt is derived from the password, so the file (and the deploy) does
    not change while the password does not."""
    salt = hashlib.sha256(b"celery-fleet\0" + password.encode()).digest()[:4]
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def celery_rabbitmq_settings(h: PlannedHost) -> dict:
    return {"queues": repr(_fleet_queues(h))}


def _fleet_queues(h: PlannedHost) -> list[str]:
    return sorted(set(h.settings["embedding_queues"]) | set(h.settings["llm_queues"]))


def broker_config(h: PlannedHost) -> dict:
    """What a Celery app needs beside the URLs: with RabbitMQ, the quorum queues' settings
    (templates/celery_fleet_rabbitmq.py.j2, through CELERY_CONFIG_MODULE)."""
    if h.rabbitmq is None:
        return {"config_module": "", "python_path": ""}
    return {"config_module": env_quote(layout.RABBITMQ_CELERY_CONFIG_MODULE),
            "python_path": env_quote(layout.PYTHON_DIR)}


def flower_unit(h: PlannedHost) -> dict:
    return {"venv": layout.flower_venv(h.settings["install_dir"]),
            "address": h.private_address, "port": h.settings["flower_port"],
            "env_file": layout.FLOWER_ENV, "redis_unit": layout.REDIS_UNIT}


def flower_env(h: PlannedHost) -> dict:
    # secrets in the environment, never on the command line (`ps` shows it to every user)
    return {"broker_url": env_quote(h.broker_url), "basic_auth": env_quote(h.flower_auth)}


def redis_conf(h: PlannedHost) -> dict:
    redis = h.plan.redis
    return {
        "bind_addresses": " ".join(dict.fromkeys(["127.0.0.1", h.private_address])),
        "port": h.settings["redis_port"],
        "password": h.broker.password,
        "maxmemory_mb": redis.maxmemory_mb,
        "maxmemory_policy": redis.maxmemory_policy,
        "maxmemory_reason": redis.reasons[0],
        "disabled_commands": "\n".join(f'rename-command {c} ""'
                                       for c in layout.REDIS_DISABLED_COMMANDS),
    }


def _common(h: PlannedHost, time_limit_s: int, memory_max_mb: int, pool: str,
            concurrency: int) -> dict:
    recycle = memory_recycle_mb(memory_max_mb)
    return {
        "group_unit": layout.WORKER_GROUP_UNIT,
        "service_user": h.settings["service_user"],
        "install_dir": h.settings["install_dir"],
        "venv": layout.worker_venv(h.settings["install_dir"]),
        "app_module": h.settings["worker_app_module"],
        "timeout_stop_s": time_limit_s + STOP_MARGIN_S,
        "memory_max_mb": memory_max_mb,
        "memory_high_mb": memory_high_mb(memory_max_mb),
        "exit_recycle": layout.EXIT_RECYCLE,
        # prefork: Celery replaces a child above its share after the child's task
        "max_memory_per_child_kb": recycle * 1024 // concurrency if pool == "prefork" else 0,
    }


def _worker_env(h: PlannedHost, role: str, pool: str, prefetch_multiplier: int,
                time_limit_s: int, memory_max_mb: int) -> dict:
    """What every worker's .env file carries: the broker, the plan, the limits."""
    return {
        "role": env_quote(role),
        "broker_url": env_quote(h.broker_url),
        "result_backend": env_quote(h.result_backend_url),
        **broker_config(h),
        "pool": env_quote(pool),
        "prefetch_multiplier": env_quote(prefetch_multiplier),
        "task_time_limit_s": env_quote(time_limit_s),
        "visibility_timeout_s": env_quote(h.visibility_timeout_s),
        "memory_recycle_mb": env_quote(memory_recycle_mb(memory_max_mb)),
        "task_events": env_quote(int(h.task_events)),
    }


def client_env(h: PlannedHost) -> dict:
    """A host of yours that submits tasks: Celery's own variables, nothing else."""
    return {"broker_url": env_quote(h.broker_url),
            "result_backend": env_quote(h.result_backend_url), **broker_config(h)}


def embedding_unit(h: PlannedHost) -> dict:
    plan = h.plan.embedding
    return dict(_common(h, h.settings["embedding_task_time_limit_s"], plan.memory_max_mb,
                        plan.pool, plan.concurrency),
                env_file=layout.EMBEDDING_ENV, queues=",".join(h.settings["embedding_queues"]),
                node_name=layout.unit_node_name(layout.EMBEDDING_NODE),
                pool=plan.pool, concurrency=plan.concurrency, processes=plan.processes,
                max_tasks_per_child=plan.max_tasks_per_child,
                recycle_children=plan.pool == "prefork", open_files=OPEN_FILES)


def embedding_env(h: PlannedHost) -> dict:
    plan, s = h.plan.embedding, h.settings
    return {
        **_worker_env(h, "embedding", plan.pool, EMBEDDING_PREFETCH_MULTIPLIER,
                      s["embedding_task_time_limit_s"], plan.memory_max_mb),
        "concurrency": env_quote(plan.concurrency),
        "api_url": env_quote(s["embedding_api_url"]),
        "model": env_quote(s["embedding_model"]),
        "api_key": env_quote(h.embedding_api_key),
        # the API's limit, enforced fleet-wide by the application (fleet_worker/ratelimit.py)
        "rate_limit_per_s": env_quote(round((s["embedding_rate_limit_per_min"] or 0) / 60, 4)),
        "rate_burst": env_quote(EMBEDDING_RATE_BURST),
    }


def llm_unit(h: PlannedHost) -> dict:
    plan = h.plan.llm
    # one unit template for every instance: prefork runs on CPU only, with one instance
    return dict(_common(h, h.settings["llm_task_time_limit_s"], plan.memory_max_mb, plan.pool,
                        plan.concurrency),
                env_file=layout.LLM_ENV, instance_env_file=layout.llm_instance_env("%i"),
                queues=",".join(h.settings["llm_queues"]),
                node_name=layout.unit_node_name(layout.LLM_NODE),
                prefetch_multiplier=LLM_PREFETCH_MULTIPLIER, device=plan.device, pool=plan.pool,
                server_unit=layout.llm_server_unit_name("%i") if plan.server else "")


def llm_env(h: PlannedHost) -> dict:
    plan, s = h.plan.llm, h.settings
    return {
        **_worker_env(h, "llm", plan.pool, LLM_PREFETCH_MULTIPLIER, s["llm_task_time_limit_s"],
                      plan.memory_max_mb),
        "api_url": env_quote(s["llm_api_url"]),
        "api_key": env_quote(h.llm_api_key),
        "model": env_quote(s["llm_model"]),
    }


def llm_instance_env(h: PlannedHost, instance) -> dict:
    """instance: one LlmInstance of h's plan. Its own endpoint overrides llm_api_url for that
    instance only: the inference server the plan runs for it, or the GPU's own
    (llm_gpu_api_urls, in the order of the GPU instances)."""
    server = h.plan.llm.server
    if server:
        urls = {i.name: i.url for i in server.instances}
    else:
        urls = dict(zip((i.name for i in h.plan.llm.gpu_instances),
                        h.settings["llm_gpu_api_urls"]))
    return {"instance": instance.name, "concurrency": env_quote(instance.concurrency),
            "threads": env_quote(instance.threads), "gpu_index": instance.gpu_index,
            "api_url": env_quote(urls[instance.name]) if instance.name in urls else None}


def systemd_quote(word: str) -> str:
    """One word of a unit's ExecStart= (systemd.service(5), "Command lines"): quoted, with
    the specifiers (%) and variables ($) it would expand escaped."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("%", "%%").replace("$", "$$") + '"'


def llm_server_command(h: PlannedHost) -> str:
    """The server's command line; per-instance values come from its .env (${...})."""
    server, s = h.plan.llm.server, h.settings
    venv = layout.llm_server_venv(s["install_dir"])
    model, name = systemd_quote(server.model_path), systemd_quote(server.model_name)
    if server.server == "llamacpp":
        # llama-cpp-python's settings (llama_cpp/server/settings.py): one thread count for
        # the prompt (batch) and for generation: the plan's
        return (f"{venv}/bin/python -m llama_cpp.server --model {model} --model_alias {name} "
                "--host 127.0.0.1 --port ${FLEET_SERVER_PORT} --n_threads ${FLEET_SERVER_THREADS} "
                f"--n_threads_batch ${{FLEET_SERVER_THREADS}} --n_ctx {server.context_size}")
    return (f"{venv}/bin/vllm serve {model} --served-model-name {name} --host 127.0.0.1 "
            "--port ${FLEET_SERVER_PORT} --max-num-seqs ${FLEET_SERVER_SLOTS} "
            "--gpu-memory-utilization ${FLEET_GPU_MEMORY_UTILIZATION} "
            f"--max-model-len {server.context_size}")


def llm_server_unit(h: PlannedHost) -> dict:
    server = h.plan.llm.server
    return {"server": server.server, "service_user": h.settings["service_user"],
            "instance_env_file": layout.llm_server_instance_env("%i"),
            "cache_dir": f"{layout.LLM_SERVER_CACHE}/%i",
            "command": llm_server_command(h), "ready_command": llm_server_ready_command(h),
            "memory_max_mb": server.memory_max_mb}


def llm_server_ready_command(h: PlannedHost) -> str:
    """Polls the server's /v1/models (both servers answer it once the model is loaded) with
    the server's own Python; stops when the server's process is gone. $$: the shell, not
    systemd, expands the port (from the instance's .env) and MAINPID."""
    python = f"{layout.llm_server_venv(h.settings['install_dir'])}/bin/python"
    probe = ('import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=5)')
    return (f"/bin/sh -c 'until {python} -c \"{probe}\" "
            "http://127.0.0.1:$${FLEET_SERVER_PORT}/v1/models >/dev/null 2>&1; "
            "do kill -0 $$MAINPID || exit 1; sleep 1; done'")


def llm_server_instance_env(h: PlannedHost, instance) -> dict:
    """instance: one ServerInstance of h's plan."""
    return {"instance": instance.name, "port": instance.port, "threads": instance.threads,
            "slots": instance.slots, "gpu_index": instance.gpu_index,
            "gpu_memory_utilization": instance.gpu_memory_utilization}


def worker_group(h: PlannedHost) -> dict:
    """The workers, and the inference servers they call: shown by `systemctl status
    celery-worker` (worker-states), started with it; not PartOf= it (a restart of the workers
    does not reload the models)."""
    workers = layout.planned_workers(h.plan)
    server = h.plan.llm.server if h.plan.llm else None
    servers = [layout.llm_server_unit_name(i.name) for i in server.instances] if server else []
    summary = ", ".join(f"{w.unit.removesuffix('.service')} {w.pool} x{w.concurrency}"
                        for w in workers)
    if server:
        summary += f"; {server.server} server(s) {', '.join(i.name for i in server.instances)}"
    return {"units": " ".join([w.unit for w in workers] + servers),
            "script": layout.WORKER_STATES, "summary": summary}


def hardening(unit: str, gpu: bool) -> dict:
    return {"unit": unit, "gpu": gpu}


def fake_openai_unit(h: PlannedHost) -> dict:
    return {"script": layout.FAKE_OPENAI_SCRIPT, "port": layout.FAKE_OPENAI_PORT,
            "latency_ms": h.settings["fake_openai_latency_ms"],
            "capacity": h.settings["fake_openai_capacity"],
            "completion_cpu_ms": h.settings["fake_openai_completion_cpu_ms"]}


def pip_conf(h: PlannedHost) -> dict:
    return {"index_url": h.settings["pip_index_url"]}


def render(template: str, variables: dict) -> str:
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(layout.TEMPLATES_DIR),
                                     undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return environment.get_template(template).render(**variables)
