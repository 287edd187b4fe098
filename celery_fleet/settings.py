"""Every knob of celery-fleet, declared once: key, default, what is accepted, what it does.

Inventory host data and group data only override these (`fleet plan --set KEY=VALUE` too);
nothing else in the project carries a fallback of its own. The settings table of
docs/SETTINGS.md is generated from this mapping and checked by tests/test_readme.py.

A default of None means "computed by the sizing core from the host's facts" (see sizing.py).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Callable

from . import layout
from .secret_sources import ACCEPTED as SOURCE_ACCEPTED
from .secret_sources import shown, source_of, well_formed

EMBEDDING_POOLS = ("gevent", "threads", "prefork", "solo")
LLM_CPU_POOLS = ("prefork", "solo")  # CPU inference in threads/greenlets fights the GIL and BLAS
LLM_GPU_POOLS = ("threads", "solo")  # CUDA cannot be initialised again in a forked child
INFERENCE_SERVERS = ("none", "llamacpp", "vllm")


class SettingsError(ValueError):
    """A bad inventory value: names the host, the key, the value and what is accepted."""

    def __init__(self, host: str, key: str, value: Any, accepted: str):
        self.host, self.key, self.value, self.accepted = host, key, value, accepted
        # a secret is never printed: its source (env:NAME ...) or a mask stands for it
        text = shown(value) if key in SETTINGS and SETTINGS[key].secret else repr(value)
        super().__init__(f"host {host!r}: {key}={text} is not accepted: {accepted}")


@dataclass(frozen=True)
class Setting:
    key: str
    default: Any
    accepted: str  # what a user reads when their value is refused
    check: Callable[[Any], bool]  # True when a value (already not None) is accepted
    doc: str
    # a secret: never printed; the value may name its source instead (secret_sources.py),
    # and `check` applies to what that source gives
    secret: bool = False

    def accepts(self, value: Any) -> bool:
        source = source_of(value) if self.secret else None
        return well_formed(source) if source is not None else self.check(value)


def _int_at_least(minimum: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _number_above_zero(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda v: v in choices


def _text(v: Any) -> bool:
    # printable ASCII: it is written into .env files that systemd and the checks both parse
    return isinstance(v, str) and v.isascii() and v.isprintable()


def _url(v: Any) -> bool:
    return _text(v) and (v == "" or (v.startswith(("http://", "https://")) and " " not in v
                                     and len(v) > len("http://")))


def _user_name(v: Any) -> bool:
    return _text(v) and re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", v) is not None and v != "root"


def _vram_list(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(_int_at_least(1024)(x) for x in v)


def _networks(value) -> bool:
    if not isinstance(value, list):
        return False
    try:
        return all(isinstance(v, str) and ipaddress.IPv4Network(v, strict=False) for v in value)
    except ValueError:
        return False


def _queue_names(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(
        isinstance(x, str) and re.fullmatch(r"[A-Za-z0-9_.:-]{1,200}", x) for x in v)


def _requirements(v: Any) -> bool:
    # pip requirements, one each; no options (they would be passed to pip as such)
    return isinstance(v, list) and all(_text(x) and x.strip() and not x.startswith("-")
                                       for x in v)


def _account(v: Any) -> bool:
    return _text(v) and re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", v) is not None


def _password(v: Any) -> bool:
    # written bare into redis.conf (requirepass): no blanks, quotes or backslashes, which its
    # parser reads as syntax; URL-quoted in the broker URL (layout.redis_url)
    return _text(v) and len(v) >= 16 and not set(v) & set(" \t\"'\\")


def _path_list(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(x, str) and x for x in v)


_SETTINGS = [
    # -- facts: detected on each host; set them to override detection or to preview a plan --
    Setting("ram_mb", None, "a whole number of MB >= 512", _int_at_least(512),
            "RAM of the host in MB (detected: pyinfra hardware.Memory)"),
    Setting("cores", None, "a whole number >= 1", _int_at_least(1),
            "CPU cores of the host (detected: pyinfra hardware.Cpus)"),
    Setting("gpus", None, "a list of VRAM sizes in MB (each >= 1024), [] for none",
            _vram_list, "VRAM of each NVIDIA GPU in MB (detected: nvidia-smi)"),
    # -- embedding worker --
    Setting("embedding_pool", "threads", f"one of {', '.join(EMBEDDING_POOLS)}",
            _one_of(*EMBEDDING_POOLS),
            "Celery pool of the embedding worker (I/O-bound: threads, or gevent for an app "
            "that needs Celery's hard time limit or thousands of slots a process; "
            "docs/BENCHMARKS.md)"),
    Setting("embedding_concurrency", None, "a whole number >= 1", _int_at_least(1),
            "tasks in flight on the host, all its embedding processes together (default: the "
            "RAM tier, or what the endpoint and the cores can take where the endpoint is "
            "known; docs/TUNING.md)"),
    Setting("embedding_processes", None, "a whole number >= 1", _int_at_least(1),
            "embedding worker processes (default: as many as the CPU per task needs, at most "
            "two per core)"),
    Setting("embedding_rate_limit_per_min", None, "a number of requests per minute > 0",
            _number_above_zero,
            "the embeddings API's rate limit, shared by every embedding host"),
    Setting("embedding_latency_ms", None, "a number of milliseconds > 0", _number_above_zero,
            "time the endpoint takes to answer one embedding request (fleet tune measures it; "
            "assumed 200)"),
    Setting("embedding_endpoint_concurrency", None, "a whole number >= 1", _int_at_least(1),
            "requests the embeddings endpoint serves at once, shared by every embedding host "
            "(fleet tune measures it); with it the plan may go past the RAM tier"),
    Setting("embedding_task_cpu_ms", None, "a number of milliseconds > 0", _number_above_zero,
            "CPU one embedding task costs its worker process (fleet tune measures it; assumed "
            "11): how many slots one process drives"),
    Setting("embedding_memory_max_mb", None, "a whole number of MB >= 256", _int_at_least(256),
            "MemoryMax= of each embedding worker process (default: RAM tier / processes)"),
    Setting("embedding_max_tasks_per_child", 100, "a whole number >= 1", _int_at_least(1),
            "recycle a pool child after this many tasks (prefork only)"),
    Setting("embedding_api_url", "", "an http(s) URL such as http://10.0.0.5:8000/v1", _url,
            "OpenAI-compatible API base URL the embed task calls"),
    Setting("embedding_model", "text-embedding-3-small", "a model name", _text,
            "model name sent to the embeddings API"),
    Setting("embedding_api_key", "", f"the key (printable ASCII), or {SOURCE_ACCEPTED}", _text,
            "API key for the embeddings API; kept in the 0600 .env file only, never printed",
            secret=True),
    # -- LLM worker --
    Setting("llm_pool", None, f"on CPU one of {', '.join(LLM_CPU_POOLS)}; on GPU one of "
            f"{', '.join(LLM_GPU_POOLS)}", _one_of(*set(LLM_CPU_POOLS + LLM_GPU_POOLS)),
            "Celery pool of the LLM worker (default: prefork on CPU, threads on GPU)"),
    Setting("llm_concurrency", None, "a whole number >= 1", _int_at_least(1),
            "tasks at once per LLM worker instance (default: 1 on CPU, 2-4 by VRAM on GPU)"),
    Setting("llm_threads", None, "a whole number >= 1", _int_at_least(1),
            "inference threads per task (default: cores / concurrency)"),
    Setting("llm_model_vram_mb", 8192, "a whole number of MB >= 256", _int_at_least(256),
            "VRAM the model's weights take on one GPU"),
    Setting("llm_kv_cache_per_task_mb", None, "a whole number of MB >= 1", _int_at_least(1),
            "memory one generation of llm_context_size tokens needs beside the weights (KV "
            "cache): VRAM on a GPU, RAM for llama.cpp on CPU (default: from the GGUF model's "
            "header; else 2048 per 4096 tokens, a 7B model without grouped-query attention)"),
    Setting("llm_memory_max_mb", None, "a whole number of MB >= 256", _int_at_least(256),
            "MemoryMax= of each LLM worker instance (default: 1024, or half the RAM if less; "
            "raise it if your worker app loads the model in-process)"),
    Setting("llm_api_url", "http://127.0.0.1:8080/v1", "an http(s) URL", _url,
            "OpenAI-compatible completions endpoint of your own server (inference_server none); "
            "a server the plan runs is called on 127.0.0.1:llm_server_port"),
    Setting("llm_gpu_api_urls", [], "a list of http(s) URLs, one per GPU the LLM worker uses "
            "(gpu0 first), or [] for llm_api_url everywhere",
            lambda v: isinstance(v, list) and all(_url(x) and x for x in v),
            "GPU hosts with your own servers (inference_server none): the endpoint each GPU's LLM "
            "worker instance calls"),
    Setting("llm_model", "default", "a model name", _text,
            "model name sent to the completions endpoint (the name a server the plan runs "
            "answers to)"),
    Setting("llm_api_key", "", f"the key (printable ASCII), or {SOURCE_ACCEPTED}", _text,
            "API key for the completions endpoint; kept in the 0600 .env file only, never "
            "printed", secret=True),
    # -- the LLM inference server (celery_fleet/inference.py) --
    Setting("inference_server", None, f"one of {', '.join(INFERENCE_SERVERS)}",
            _one_of(*INFERENCE_SERVERS),
            "the server the LLM worker calls, installed and sized by the plan: llamacpp "
            "(llama.cpp on CPU), vllm (one per GPU), or none (your own, at llm_api_url) "
            "(default: llamacpp or vllm by the host's GPUs where a model is set, else none)"),
    Setting("llm_model_path", "", "a model file on this controller (GGUF for llamacpp), or "
            "empty", _text, "the model the server loads: uploaded to the hosts once, checked "
            "by sha256"),
    Setting("llm_model_host_path", "", "an absolute path on the host, or empty",
            lambda v: _text(v) and (v == "" or v.startswith("/")),
            "a model already on the host (a GGUF file for llamacpp; a model directory or a "
            "GGUF file for vllm), outside /home, /root and celery-fleet's model directory: "
            "not uploaded"),
    Setting("llm_model_sha256", "", "64 hexadecimal digits, or empty",
            lambda v: isinstance(v, str) and re.fullmatch(r"([0-9a-fA-F]{64})?", v) is not None,
            "the sha256 llm_model_path must have (checked on the controller before any change, "
            "and on each host after the upload; default: the file's own)"),
    Setting("llm_model_ram_mb", None, "a whole number of MB >= 1", _int_at_least(1),
            "RAM the server needs for the weights (default: the model file's size)"),
    Setting("llm_context_size", 4096, "a whole number of tokens >= 128", _int_at_least(128),
            "context window of one generation (llama.cpp --n_ctx, vLLM --max-model-len)"),
    Setting("llm_server_port", 8080, "a port number 1024-65000",
            lambda v: _int_at_least(1024)(v) and v <= 65000,
            "port of the first inference server on 127.0.0.1 (cpu, gpu0); the next ones count "
            "up (gpuN: port + N)"),
    Setting("llm_server_source", None, "a pip requirement, or a directory with a "
            "pyproject.toml on this controller", _text,
            "the server's Python package (default: llama-cpp-python pinned, built once on "
            "this controller for every host; vllm pinned, from the package index)"),
    # -- the broker --
    Setting("broker", "redis", "redis or rabbitmq", _one_of("redis", "rabbitmq"),
            "the Celery broker, one for the whole fleet (set it in the inventory's data for "
            "all hosts): redis (one host in brokers), or rabbitmq (1 host, or 3 for a cluster "
            "of quorum queues: nothing lost when a worker or a broker dies; Redis then keeps "
            "the results, on the first broker): docs/BROKERS.md"),
    Setting("rabbitmq_port", 5672, "a port number 1-65535",
            lambda v: _int_at_least(1)(v) and v <= 65535, "port RabbitMQ listens on (AMQP)"),
    Setting("rabbitmq_password", None, "16 or more printable ASCII characters without blanks, "
            f"quotes or backslashes, or {SOURCE_ACCEPTED}", _password,
            "the password of RabbitMQ's user for the fleet (default: generated once by the "
            "deploy that installs the first broker, kept in secrets_dir, mode 0600)",
            secret=True),
    # -- Redis --
    Setting("redis_maxmemory_mb", None, "a whole number of MB >= 64", _int_at_least(64),
            "Redis maxmemory (default: a share of the broker's RAM)"),
    Setting("redis_port", 6379, "a port number 1-65535",
            lambda v: _int_at_least(1)(v) and v <= 65535, "port Redis listens on"),
    Setting("redis_password", None, "16 or more printable ASCII characters without blanks, "
            f"quotes or backslashes, or {SOURCE_ACCEPTED}", _password,
            "broker password (default: generated once by the deploy that installs the broker, "
            "kept in secrets_dir, mode 0600); share it in a team with env:, file: or command:",
            secret=True),
    Setting("flower", False, "true or false", lambda v: isinstance(v, bool),
            "run Flower (Celery's web monitor, Prometheus metrics at /metrics) on the broker, "
            "on its private address, behind a generated password; workers then send task "
            "events"),
    Setting("flower_port", 5555, "a port number 1-65535",
            lambda v: _int_at_least(1)(v) and v <= 65535, "port Flower listens on"),
    Setting("broker_allowed_networks", [], "a list of IPv4 addresses or networks "
            "(10.0.0.0/24)", _networks,
            "who may reach Redis besides the fleet's hosts and the celery_clients group "
            "(producers celery-fleet does not manage); set on the broker host"),
    Setting("client_user", "root", "a user name of the host (a-z, 0-9, _, -)", _account,
            "celery_clients hosts: the user your application runs as, the owner of "
            "/etc/celery-fleet-client.env (mode 0600)"),
    Setting("flower_allowed_networks", [], "a list of IPv4 addresses or networks "
            "(10.0.0.0/24)", _networks,
            "who may reach Flower besides the fleet's hosts (your desk, Prometheus)"),
    # -- deploy --
    Setting("private_address", None, "an IP address or host name",
            lambda v: _text(v) and re.fullmatch(r"[A-Za-z0-9.:-]+", v) is not None,
            "address the fleet reaches this host on (default: its SSH address)"),
    Setting("service_user", "celery", "a system user name (a-z, 0-9, _, -; not root)",
            _user_name,
            "system user the workers run as"),
    Setting("install_dir", "/opt/celery-fleet", "an absolute path",
            lambda v: isinstance(v, str) and v.startswith("/"),
            "virtualenv and application directory on the hosts"),
    Setting("worker_app_source", "worker", "a directory with a Python project (pyproject.toml)",
            _text, "the Celery application to install (relative to the project)"),
    Setting("worker_app_module", "fleet_worker.app", "a Python module path", _text,
            "celery -A value"),
    Setting("worker_requirements", list(layout.WORKER_BASE_REQUIREMENTS),
            "a list of pip requirements, such as ['celery[redis]==5.4.0', 'gevent==24.11.1']",
            _requirements, "installed with the application in the worker virtualenv: the "
            "Celery and gevent your application was written for"),
    Setting("embedding_queues", [layout.EMBEDDING_QUEUE], "a list of queue names (letters, "
            "digits, _ . : -)", _queue_names,
            "queues the embedding workers consume (your application's task routes)"),
    Setting("llm_queues", [layout.LLM_QUEUE], "a list of queue names (letters, digits, "
            "_ . : -)", _queue_names, "queues the LLM workers consume"),
    Setting("embedding_task_time_limit_s", 300, "a whole number of seconds >= 10",
            _int_at_least(10), "hard time limit of one embedding task; stopping the worker "
            "waits this long for running tasks (warm shutdown)"),
    Setting("llm_task_time_limit_s", 1800, "a whole number of seconds >= 10",
            _int_at_least(10), "hard time limit of one generation; stopping the worker waits "
            "this long for running tasks (warm shutdown)"),
    Setting("secrets_dir", ".fleet-secrets", "a directory path on the controller", _text,
            "where the generated Redis and Flower passwords are kept (mode 0600), relative to "
            "the directory pyinfra runs from"),
    Setting("extra_ca_certificates", [], "a list of certificate file paths on the controller",
            _path_list, "CA certificates the hosts must trust (pip behind a TLS proxy)"),
    Setting("fake_openai_backend", False, "true or false", lambda v: isinstance(v, bool),
            "run the project's fake OpenAI-compatible API on 127.0.0.1:8080 of this host "
            "(the lab and its tests; never in production)"),
    Setting("fake_openai_latency_ms", 50, "a number of milliseconds >= 0",
            lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
            "the fake API's answer time for embeddings"),
    Setting("fake_openai_capacity", 1024, "a whole number >= 1", _int_at_least(1),
            "requests the fake API serves at once (the rest wait their turn)"),
    Setting("fake_openai_completion_cpu_ms", 300, "a number of milliseconds >= 0",
            lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
            "CPU the fake API burns per completion, across every core"),
    Setting("pip_index_url", "", "an http(s) URL, or empty for PyPI", _url,
            "package index the hosts install Python packages from"),
]

SETTINGS: dict[str, Setting] = {s.key: s for s in _SETTINGS}
DEFAULTS: dict[str, Any] = {s.key: s.default for s in _SETTINGS}

# Host data keys that belong to pyinfra or to the lab, not to us: never reported as unknown.
FOREIGN_PREFIXES = ("ssh_", "_", "lab_", "winrm_", "docker_", "chroot_", "local_")
# Prefixes that mark a key as ours: an unknown key with one of them is a typo.
OWN_PREFIXES = ("embedding_", "llm_", "redis_", "worker_", "fleet_")


def did_you_mean(key: str) -> str:
    close = difflib.get_close_matches(key, SETTINGS, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def problems(host: str, data: dict) -> list[SettingsError]:
    """Every bad value and unknown key in a host's data (empty when all is well)."""
    found = []
    for key, value in data.items():
        if key in SETTINGS:
            setting = SETTINGS[key]
            if value is not None and not setting.accepts(value):
                found.append(SettingsError(host, key, value, setting.accepted))
        elif not key.startswith(FOREIGN_PREFIXES) and (
                key.startswith(OWN_PREFIXES) or did_you_mean(key)):
            found.append(SettingsError(host, key, value, "no such setting" + did_you_mean(key)
                                       + "; settings are listed in docs/SETTINGS.md"))
    return found


class Settings(dict):
    """A host's settings, resolved: every key of SETTINGS, every value checked. The one object
    that carries them (sizing, rendering, roles); made only by resolve()."""


def resolve(host: str, data: dict) -> Settings:
    """Defaults overlaid with the host's data, every value checked; raises SettingsError.
    Settings already resolved come back as they are."""
    if isinstance(data, Settings):
        return data
    found = problems(host, data)
    if found:
        raise found[0]
    resolved = Settings(DEFAULTS)
    resolved.update({key: value for key, value in data.items() if key in SETTINGS})
    return resolved


def parse_cli_value(key: str, text: str) -> Any:
    """A --set KEY=VALUE value typed like the default it overrides (ints, lists, strings)."""
    import yaml

    if key not in SETTINGS:
        raise SettingsError("(command line)", key, text, "no such setting" + did_you_mean(key))
    value = yaml.safe_load(text)
    return text if isinstance(value, (str, type(None))) and text != "null" else value


def settings_table_markdown() -> str:
    """The settings table of docs/SETTINGS.md, generated from this mapping (checked by
    tests/test_readme.py; `python -m celery_fleet.settings` writes it there)."""
    rows = ["| setting | default | accepted | what it does |", "|---|---|---|---|"]
    for s in _SETTINGS:
        default = "auto" if s.default is None else f"`{s.default!r}`"
        rows.append(f"| `{s.key}` | {default} | {s.accepted} | {s.doc} |")
    return "\n".join(rows)


def update_readme(path=None) -> None:
    """Rewrite the settings table between the markers of docs/SETTINGS.md (or of the file at
    path): python -m celery_fleet.settings"""
    from pathlib import Path

    doc = Path(path) if path is not None else layout.PROJECT_DIR / "docs" / "SETTINGS.md"
    text, found = re.subn(r"(<!-- settings-table:start -->\n).*?(\n<!-- settings-table:end -->)",
                          lambda m: m.group(1) + settings_table_markdown() + m.group(2),
                          doc.read_text(), flags=re.S)
    if found != 1:
        raise ValueError(f"{doc}: expected one pair of settings-table markers, found {found}")
    doc.write_text(text)


if __name__ == "__main__":
    update_readme()
