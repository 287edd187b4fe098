"""An example production fleet: copy to inventory/production.py, edit, then

    .venv/bin/fleet plan inventory/production.py      # the plan of every host, from its real facts
    .venv/bin/pyinfra inventory/production.py deploy.py --dry   # what the deploy would change
    .venv/bin/pyinfra inventory/production.py deploy.py
    .venv/bin/fleet status inventory/production.py    # what runs, against the plan

Groups: brokers (exactly one: the Redis broker), embedding_workers, llm_workers, and
celery_clients (hosts of yours that submit tasks: the broker admits them and they get
/etc/celery-fleet-client.env). A host may be in several groups. Host data overrides the
defaults (docs/SETTINGS.md) and what is detected: set ram_mb / cores / gpus only to correct
detection. pyinfra reads every module-level list as a group: the shared dicts below start
with "_" so they are not taken for groups.
"""

# How pyinfra reaches every host: an operator account with sudo, host keys checked. Merged
# into each host's data below (data every host shares).
_ssh = {
    "ssh_user": "ops",
    "ssh_key": "~/.ssh/fleet_ed25519",
    "ssh_strict_host_key_checking": "yes",
    "_sudo": True,  # passwordless sudo, or add "_sudo_password"
}

# Shared by every worker: the embeddings API and its rate limit (shared fleet-wide, so each
# host's concurrency is capped at its share of 1.05 x rate x latency).
_workers = {
    **_ssh,
    "embedding_api_url": "http://10.20.0.50:8000/v1",
    "embedding_model": "bge-m3",
    "embedding_rate_limit_per_min": 6000,
    "embedding_latency_ms": 250,
    "llm_api_url": "http://127.0.0.1:8080/v1",  # llama.cpp server / vLLM on each LLM host
    "llm_model_vram_mb": 9000,  # an 8B model at 8-bit
    # Your own Celery application instead of the reference one (README, "Your own Celery app"):
    # "worker_app_source": "../myapp",  # a directory with a pyproject.toml, or a pip requirement
    # "worker_app_module": "myapp.celery",  # the celery -A value
    # "embedding_queues": ["embeddings"],  # the queues your task routes use
    # "llm_queues": ["llm"],
}

brokers = [
    # Flower beside Redis: the fleet and the operators' VPN may open it (login in
    # .fleet-secrets/redis-1.internal.flower_password); Prometheus scrapes /metrics.
    # broker_allowed_networks: producers this inventory does not manage (a batch cluster).
    ("redis-1.internal", {**_ssh, "private_address": "10.20.0.10", "flower": True,
                          "flower_allowed_networks": ["10.99.0.0/24"],
                          "broker_allowed_networks": ["10.20.5.0/24"]}),
]

embedding_workers = [
    ("embed-1.internal", {**_workers, "private_address": "10.20.0.21"}),
    # a per-host override: this one shares its box with a database, so fewer greenlets than
    # its RAM tier
    ("embed-2.internal", {**_workers, "private_address": "10.20.0.22",
                          "embedding_concurrency": 8}),
]

llm_workers = [
    ("gpu-1.internal", {**_workers, "private_address": "10.20.0.31"}),
    ("gpu-2.internal", {**_workers, "private_address": "10.20.0.32", "llm_concurrency": 2}),
    ("cpu-1.internal", {**_workers, "private_address": "10.20.0.41"}),
]

# Your web servers: they submit tasks with Celery's own CELERY_BROKER_URL and
# CELERY_RESULT_BACKEND from /etc/celery-fleet-client.env (0600, owned by client_user).
celery_clients = [
    ("web-1.internal", {**_ssh, "private_address": "10.20.0.61", "client_user": "www-data"}),
    ("web-2.internal", {**_ssh, "private_address": "10.20.0.62", "client_user": "www-data"}),
]
