"""The LLM inference server of a host (pure): which server, how many, on which ports, with how
many threads and generations at once, and how much memory; refused before any change when the
model does not fit.

The LLM worker's plan (sizing.plan_llm) decides generations at once and threads; the server
is where that decision lives. So the server follows the worker instance by instance: each
LLM worker instance calls its own server (celery-fleet-llm-server@<same instance>).

- llamacpp (CPU): llama-cpp-python's OpenAI-compatible server answers one request at a time
  (its server holds one lock around the model: llama_cpp/server/app.py, llama_outer_lock), so
  N generations at once take N servers of cores / N threads each, one worker of concurrency 1
  each: @cpu0 ... A single slot keeps the names of the plan without a server (@cpu).
- vllm (GPU): one server per GPU, pinned with CUDA_VISIBLE_DEVICES, --max-num-seqs = that
  GPU's generations at once, --gpu-memory-utilization = the VRAM share the plan gives it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from . import layout
from .model_file import ABSENT, DIRECTORY, GGUF, UNREADABLE
from .settings import SettingsError
from .sizing import (GPU_SERVER_RUNTIME_MB, GPU_VRAM_USABLE_SHARE, HostFacts, LlmInstance,
                     LlmPlan, kv_cache_mb)

# RAM a llama.cpp server process takes beside the weights and the KV cache: Python, FastAPI,
# uvicorn and ggml's compute buffers. Measured (RSS, llama-cpp-python 0.3.36): 79 MB with the
# lab's 0.6 MB model; 451 MB with the 227 MB bench model at context 4096 (151 MB of KV cache),
# so ~75 MB. 384 leaves room for compute buffers that grow with the batch and the context.
LLAMACPP_OVERHEAD_MB = 384
# vLLM in host RAM beside the weights it loads: torch, the CUDA context, its workers (vLLM's
# own docs ask for several GB of CPU memory a GPU; 4 GB is the floor we plan).
VLLM_OVERHEAD_MB = 4096
# Weights, KV caches and servers may take this share of the host's RAM: the rest is the OS's,
# the workers' and the page cache's (which serves the weights' mmap).
SERVER_RAM_SHARE = 0.75


@dataclass(frozen=True)
class ServerInstance:
    name: str  # the LLM worker instance it serves: "cpu", "cpu0" ..., "gpu0" ...
    port: int  # on 127.0.0.1
    threads: int
    slots: int  # generations at once (vLLM --max-num-seqs; llama.cpp: 1)
    gpu_index: int | None = None
    gpu_memory_utilization: float | None = None  # vLLM: the share of its GPU's VRAM

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@dataclass(frozen=True)
class InferencePlan:
    server: str  # "llamacpp" or "vllm"
    source: str  # pip requirement or controller directory of the server's package
    model_path: str  # on the host
    upload_from: str  # the controller file uploaded to model_path, or "" (already there)
    model_sha256: str  # of upload_from ("" where nothing is uploaded)
    model_name: str  # what the server answers to (llm_model)
    context_size: int
    model_ram_mb: int
    memory_max_mb: int  # MemoryMax= of each server instance
    instances: tuple[ServerInstance, ...]
    reasons: tuple[str, ...] = ()

    def instance(self, name: str) -> ServerInstance | None:
        return next((i for i in self.instances if i.name == name), None)


def model_setting(s: dict) -> tuple[str, str]:
    """(the setting that names the model, its value), ("", "") where none does."""
    for key in ("llm_model_path", "llm_model_host_path"):
        if s[key]:
            return key, s[key]
    return "", ""


def chosen_server(host: str, facts: HostFacts, s: dict, llm: LlmPlan) -> tuple[str, str]:
    """(server, why): the inference_server setting, or the default by model and device."""
    key, _ = model_setting(s)
    if s["llm_model_path"] and s["llm_model_host_path"]:
        raise SettingsError(host, "llm_model_host_path", s["llm_model_host_path"],
                            "empty when llm_model_path is set (one model: uploaded from the "
                            "controller, or already on the host)")
    if s["inference_server"] is not None:
        return s["inference_server"], f"inference_server={s['inference_server']} set"
    if not key:
        return "none", ("no inference server: no model set (llm_model_path or "
                        "llm_model_host_path); the worker calls llm_api_url, your own server")
    if facts.gpu_problem:
        raise SettingsError(host, "inference_server", None, f"llamacpp, vllm or none set "
                            f"explicitly: GPU detection failed ({facts.gpu_problem}), and "
                            "the deploy will not guess the server (it would replace a GPU "
                            "host's vLLM servers with llama.cpp); fix nvidia-smi, or say which")
    if facts.gpus and llm.device == "cpu":
        kv, why = kv_cache_mb(facts, s)
        raise SettingsError(host, "llm_model_vram_mb", s["llm_model_vram_mb"],
                            f"a model that fits one of this host's GPUs "
                            f"({', '.join(str(g.vram_mb) for g in facts.gpus)} MB, "
                            f"{GPU_VRAM_USABLE_SHARE:.0%} of it usable, with one generation's "
                            f"{kv} MB ({why}) and the server's runtime, "
                            f"{GPU_SERVER_RUNTIME_MB} MB); or a shorter llm_context_size; or "
                            "inference_server: llamacpp to serve it on CPU")
    server = "vllm" if llm.device == "gpu" else "llamacpp"
    return server, f"{server}: a model is set ({key}) and the plan is for {llm.device.upper()}"


def plan_inference(host: str, facts: HostFacts, s: dict, llm: LlmPlan,
                   taken_ports: dict[int, str] | None = None) -> LlmPlan:
    """The LLM plan with its inference server (server None: the user's own). taken_ports:
    {port: the setting that takes it} of what else listens on this host."""
    server, why = chosen_server(host, facts, s, llm)
    if server == "none":
        return replace(llm, reasons=llm.reasons + (why,))
    if s["llm_gpu_api_urls"]:
        raise SettingsError(host, "llm_gpu_api_urls", s["llm_gpu_api_urls"], f"[] when the "
                            f"plan runs the inference server ({server}: each worker calls its "
                            "own); or inference_server: none to call your servers")
    key, value = model_setting(s)
    if not key:
        raise SettingsError(host, "llm_model_path", "", f"a model file (or llm_model_host_path, "
                            f"a model on the host) for inference_server={server}")
    if server == "llamacpp" and llm.device == "gpu":
        raise SettingsError(host, "inference_server", server, "vllm or none on a host whose "
                            "GPUs the plan uses (llama.cpp is built for CPU here); or gpus: [] "
                            "to plan this host for CPU")
    if server == "vllm" and llm.device == "cpu":
        raise SettingsError(host, "inference_server", server, "llamacpp or none on a host "
                            "without a GPU the model fits (vLLM serves GPUs)")
    check_model(host, facts, s, server)
    # uploaded models are named by their content: a new model never overwrites the file a
    # running server has mapped, and the old one is removed once the servers restarted
    model_path = (f"{layout.MODEL_DIR}/{facts.llm_model_sha256[:16]}/{PurePosixPath(value).name}"
                  if key == "llm_model_path" else value)
    base = dict(server=server, model_path=model_path, model_sha256=facts.llm_model_sha256,
                upload_from=value if key == "llm_model_path" else "", model_name=s["llm_model"],
                context_size=s["llm_context_size"])
    planned = (_llamacpp(host, facts, s, llm, base) if server == "llamacpp"
               else _vllm(host, facts, s, llm, base))
    ports = [i.port for i in planned.server.instances]
    for port, taken_by in sorted((taken_ports or {}).items()):
        if port in ports:
            raise SettingsError(host, "llm_server_port", s["llm_server_port"],
                                f"a port whose servers ({min(ports)}-{max(ports)}) leave "
                                f"{port} to {taken_by} on this host")
    return replace(planned, reasons=planned.reasons + (why,) + planned.server.reasons)


# The servers run with ProtectHome=yes (templates/hardening.conf.j2): these are empty to them
PROTECTED_HOME = ("/home", "/root", "/run/user")


def check_host_model_path(host: str, path: str) -> None:
    """A model already on the host is one the servers can see and celery-fleet never removes."""
    def under(top: str) -> bool:
        return path == top or path.startswith(top.rstrip("/") + "/")

    if under(layout.MODEL_DIR):
        raise SettingsError(host, "llm_model_host_path", path, f"a path outside "
                            f"{layout.MODEL_DIR}: celery-fleet keeps its uploaded models there "
                            "and removes those the plan no longer names")
    if any(under(top) for top in PROTECTED_HOME):
        raise SettingsError(host, "llm_model_host_path", path, "a path outside "
                            f"{', '.join(PROTECTED_HOME)}: the inference servers run with "
                            "ProtectHome=yes and cannot see them (e.g. /srv/models)")


def check_model(host: str, facts: HostFacts, s: dict, server: str) -> None:
    """The model the settings name is there, readable, of a format the server loads, and
    has the sha256 the inventory expects."""
    key, value = model_setting(s)
    uploaded = key == "llm_model_path"
    where = "this controller" if uploaded else "the host"
    if facts.llm_model_format == ABSENT:
        raise SettingsError(host, key, value, f"a model that exists on {where}; nothing is "
                            "there")
    if not uploaded:
        check_host_model_path(host, value)
    if facts.llm_model_format == UNREADABLE:
        raise SettingsError(host, key, value, f"a model readable on {where} (permission denied"
                            f" to {'you' if uploaded else 'the deploy user'}); on the host the "
                            "inference server reads it as the service user")
    if not facts.llm_model_format:  # nobody looked: fleet plan without an inventory
        if facts.llm_model_mb is None and s["llm_model_ram_mb"] is None:
            raise SettingsError(host, "llm_model_ram_mb", None, "the model's size in MB: a plan "
                                "without an inventory cannot look at a model on the host")
        return
    if uploaded and facts.llm_model_format == DIRECTORY:
        raise SettingsError(host, key, value, "a GGUF model file (one file is uploaded); a "
                            "model directory (vLLM's Hugging Face layout) is copied to the "
                            "hosts first and named in llm_model_host_path")
    accepted = (GGUF, DIRECTORY) if server == "vllm" and not uploaded else (GGUF,)
    if facts.llm_model_format not in accepted:
        raise SettingsError(host, key, value, f"a GGUF model file (it starts with the bytes "
                            f"GGUF){' or a model directory' if DIRECTORY in accepted else ''} "
                            f"for {server}; this one is not")
    expected = s["llm_model_sha256"].lower()
    if expected and not uploaded:
        raise SettingsError(host, "llm_model_sha256", s["llm_model_sha256"], "empty with "
                            "llm_model_host_path (a model already on the host is not uploaded, "
                            "so not checked); it checks llm_model_path")
    if expected and facts.llm_model_sha256 != expected:
        raise SettingsError(host, "llm_model_sha256", s["llm_model_sha256"],
                            f"the sha256 of llm_model_path ({value}), which is "
                            f"{facts.llm_model_sha256}: the file changed, or the value is not "
                            "its")


def _model_ram_mb(s: dict, facts: HostFacts) -> tuple[int, str]:
    if s["llm_model_ram_mb"] is not None:
        return s["llm_model_ram_mb"], "llm_model_ram_mb set"
    return facts.llm_model_mb, "the model file's size"


def _llamacpp(host: str, facts: HostFacts, s: dict, llm: LlmPlan, base: dict) -> LlmPlan:
    if facts.arch and facts.arch != "x86_64":
        raise SettingsError(host, "inference_server", "llamacpp", f"none on this {facts.arch} "
                            "host (the llama.cpp build is for x86_64): run your own server")
    missing = [f for f in layout.LLAMACPP_CPU_FLAGS if facts.cpu_flags and f not in facts.cpu_flags]
    if missing:
        raise SettingsError(host, "inference_server", "llamacpp", f"none on this host: its CPU "
                            f"lacks {', '.join(missing)}, which the llama.cpp build needs "
                            "(x86-64-v3, layout.LLAMACPP_CMAKE_ARGS): run your own server")
    slots, threads = llm.concurrency, llm.threads
    kv, kv_from = kv_cache_mb(facts, s)
    model_mb, size_from = _model_ram_mb(s, facts)
    # the weights are mmap'ed: N servers of one model share them in the page cache
    need = model_mb + slots * (kv + LLAMACPP_OVERHEAD_MB)
    room = int(facts.ram_mb * SERVER_RAM_SHARE)
    if need > room:
        key = "llm_model_ram_mb" if s["llm_model_ram_mb"] is not None else model_setting(s)[0]
        raise SettingsError(host, key, s[key], (
            f"a model that fits this host's RAM: {model_mb} MB of weights ({size_from}) + "
            f"{slots} x ({kv} MB KV cache ({kv_from}) + {LLAMACPP_OVERHEAD_MB} MB server) = "
            f"{need} MB, more than {SERVER_RAM_SHARE:.0%} of its {facts.ram_mb} MB ({room} MB); "
            "use a smaller or more quantized model, fewer generations at once "
            "(llm_concurrency) or a shorter llm_context_size"))
    names = ["cpu"] if slots == 1 else [f"cpu{i}" for i in range(slots)]
    port = s["llm_server_port"]
    servers = tuple(ServerInstance(name, port + i, threads, 1) for i, name in enumerate(names))
    reasons = [f"llama.cpp server: {model_mb} MB of weights ({size_from}), {kv} MB of "
               f"{kv_from}, {threads} thread(s), one generation at a time"]
    if slots > 1:
        reasons.append(f"llama-cpp-python's server answers one request at a time: {slots} "
                       f"servers of {threads} thread(s), one LLM worker (concurrency 1) each")
    server = InferencePlan(**base, source=s["llm_server_source"] or layout.LLAMACPP_REQUIREMENT,
                           model_ram_mb=model_mb,
                           memory_max_mb=model_mb + kv + LLAMACPP_OVERHEAD_MB,
                           instances=servers, reasons=tuple(reasons))
    instances = tuple(LlmInstance(name, None, 1, threads) for name in names)
    return replace(llm, concurrency=1, instances=instances, server=server)


def _gpu_memory_utilization(vram_mb: int, model_vram_mb: int, slots: int, kv: int) -> float:
    """The VRAM share vLLM may take: the weights, the planned generations' KV caches and its
    runtime, in hundredths, rounded up, never above what the plan counts usable."""
    need = model_vram_mb + slots * kv + GPU_SERVER_RUNTIME_MB
    return min(math.ceil(need / vram_mb * 100) / 100, GPU_VRAM_USABLE_SHARE)


def _vllm(host: str, facts: HostFacts, s: dict, llm: LlmPlan, base: dict) -> LlmPlan:
    vram = {g.index: g.vram_mb for g in facts.gpus}
    (kv, kv_from), port = kv_cache_mb(facts, s), s["llm_server_port"]
    weights = s["llm_model_vram_mb"]
    servers = []
    for i in llm.gpu_instances:
        share = _gpu_memory_utilization(vram[i.gpu_index], weights, i.concurrency, kv)
        servers.append(ServerInstance(i.name, port + i.gpu_index, i.threads, i.concurrency,
                                      i.gpu_index, share))
    model_mb, size_from = _model_ram_mb(s, facts)
    reasons = tuple(f"vLLM on GPU {i.gpu_index}: {i.slots} at once (--max-num-seqs), "
                    f"{i.gpu_memory_utilization:.0%} of its VRAM (weights {weights} MB + "
                    f"{i.slots} x {kv} MB KV cache ({kv_from}) + {GPU_SERVER_RUNTIME_MB} MB "
                    "runtime)" for i in servers)
    server = InferencePlan(**base, source=s["llm_server_source"] or layout.VLLM_REQUIREMENT,
                           model_ram_mb=model_mb, memory_max_mb=model_mb + VLLM_OVERHEAD_MB,
                           instances=tuple(servers), reasons=reasons)
    return replace(llm, server=server)
