"""An example production fleet: copy to inventory/production.py, edit, then

    pyinfra inventory/production.py deploy.py
    fleet plan inventory/production.py      # the plan of every host, from its real facts
    fleet status inventory/production.py    # what runs, against the plan

Groups: brokers (exactly one: the Redis broker), embedding_workers, llm_workers. A host may be
in several groups. Host data overrides the defaults (README, "Settings") and what is detected:
set ram_mb / cores / gpus only to correct detection.
"""

# How pyinfra reaches the hosts: as an operator account with sudo, host keys checked.
_ssh = {
    "ssh_user": "ops",
    "ssh_key": "~/.ssh/fleet_ed25519",
    "ssh_strict_host_key_checking": "yes",
    "_sudo": True,
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
}

brokers = [
    # Flower beside Redis: the fleet and the operators' VPN may open it (login in
    # .fleet-secrets/redis-1.internal.flower_password); Prometheus scrapes /metrics
    ("redis-1.internal", {**_ssh, "private_address": "10.20.0.10", "flower": True,
                          "flower_allowed_networks": ["10.99.0.0/24"]}),
]

embedding_workers = [
    ("embed-1.internal", {**_workers, "private_address": "10.20.0.21"}),
    # this one shares its box with a database: fewer greenlets than its RAM tier
    ("embed-2.internal", {**_workers, "private_address": "10.20.0.22",
                          "embedding_concurrency": 8}),
]

llm_workers = [
    ("gpu-1.internal", {**_workers, "private_address": "10.20.0.31"}),
    ("gpu-2.internal", {**_workers, "private_address": "10.20.0.32", "llm_concurrency": 2}),
    ("cpu-1.internal", {**_workers, "private_address": "10.20.0.41"}),
]
