"""The sizing core: host facts + settings in, a plan out. Pure: no pyinfra, no I/O.

Every rule is a named constant with its reason; figures marked SIZING.md were measured on this
project's machine kind with real `celery worker` processes (../shared/SIZING.md, re-measured by
`fleet bench`, see docs/BENCHMARKS.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from typing import TYPE_CHECKING

from .layout import EPMD_PORT, FAKE_OPENAI_PORT, RABBITMQ_DIST_PORT_OFFSET
from .settings import LLM_CPU_POOLS, LLM_GPU_POOLS, SettingsError, resolve

if TYPE_CHECKING:  # inference.py builds on this module's plans
    from .inference import InferencePlan

# ---- embedding worker ---------------------------------------------------------------------
# RAM tiers from the design documents: ~4 GB -> 8, ~8 GB -> 16, 16 GB and more -> 32 tasks in
# flight ON THE HOST (all its worker processes together), with MemoryMax 4G / 6G / 8G for the
# host. "~": a machine sold as N GB reports 3-5 % less (kernel, firmware reservations), so each
# tier starts at 90 % of its nominal size. With nothing known about the endpoint, the tier is
# the most a host sends at once: more invites 429 storms on an API nobody measured.
NOMINAL_SHARE = 0.9
EMBEDDING_RAM_TIERS = (  # (nominal RAM MB, tasks in flight on the host, memory MB), largest first
    (16384, 32, 8192),
    (8192, 16, 6144),
    (4096, 8, 4096),
)
# Below ~4 GB the documents give nothing: half the tier's greenlets, half the RAM as ceiling.
EMBEDDING_SMALL_HOST_CONCURRENCY = 4
EMBEDDING_SMALL_HOST_MEMORY_SHARE = 0.5
EMBEDDING_MEMORY_MIN_MB = 512  # a worker process with its imports takes ~60-70 MB
# CPU one embedding task costs its worker process (Celery, HTTP, JSON, the Redis ack and
# result), assumed until measured (embedding_task_cpu_ms, which `fleet tune` writes): fleet
# bench measured ~11 ms with the reference app and httpx (gevent); with urllib3 and threads
# the reference app costs ~2 ms for its lightest task and ~15 ms for 48 texts x 1024 floats
# (the wide sweep). An application's own tasks cost more, never less: the assumption errs
# towards more processes (a 16 GB host with one core runs two of 16).
ASSUMED_EMBEDDING_CPU_MS = 11
# Latency assumed when the inventory gives none: the design documents' reference endpoint.
ASSUMED_EMBEDDING_LATENCY_MS = 200
# Threads (or greenlets) in one process: each slot waits latency ms on the endpoint and then
# needs cpu ms of the process's one core, so (latency + cpu) / cpu slots keep that core busy.
# fleet bench (docs/BENCHMARKS.md, 200 ms endpoint, light tasks of ~4 ms, gevent) measured:
# - a process loses pace well before its core is full (16 -> 71/s, 32 -> 128/s, 64 -> 194/s
#   in one process; 16 x 2 processes 150/s beat 32 x 1): a second process helps once one
#   would hold more than 1.5 x (latency + cpu) / cpu;
# - the host's throughput still grew at 2.5 x that point (64 x 2 -> 379/s, 128 x 2 -> 480/s):
#   under load the endpoint and the core's queue stretch every slot's time, so the cores are
#   given up to 3 x before the plan stops adding slots. Too many costs little (78 KB a
#   greenlet, 111 KB a thread, tasks queue for the core); too few loses throughput. Threads
#   agree (heavy, ~15 ms: 21 x 4 = 3 x a core 123/s; 42 x 4 101/s, 16 x 2 94/s).
SLOTS_PER_PROCESS_HEADROOM = 1.5
SLOTS_PER_CORE_HEADROOM = 3.0
# Two processes a core once the host's tasks keep its cores busy: a process runs Python on one
# core at a time (the GIL), so a core whose process waits (for the GIL, or for a slice another
# service of the host took) idles unless a second process can take it. fleet bench, 2 cores,
# workers below the fake API's priority: heavy (~15 ms CPU) threads 21 x 4 and 16 x 4 123/122
# tasks/s against 16 x 2 93/s and 32 x 2 111/s, four a core (21 x 8) 76/s; light (~2 ms)
# 103 x 4 801-804/s against 103 x 2 564-692/s and 256 x 2 607-692/s. (Gunicorn's rule of
# 2 x cores + 1 workers rests on the same overlap.) "Busy" = in flight x CPU / (latency + CPU)
# >= 90 % of the cores: the workers share them with Redis, the OS, the LLM worker, and the
# measured CPU a task has its noise (the light case asked for 1.95 of 2 cores).
PROCESSES_PER_CORE = 2
BUSY_CORES_SHARE = 0.9
# SIZING.md, 50 requests/s limit, 200 ms endpoint: gevent 12 was best (49/s, no 429); 16 and up
# brought 429 storms and slower tasks. Best = 1.05 x rate x measured end-to-end latency.
LITTLE_LAW_HEADROOM = 1.05
# Pools whose concurrency is greenlets/threads inside one process (split across processes).
IN_PROCESS_POOLS = ("gevent", "threads")

# Prefetch of the embedding worker. Measured (fleet bench, 200 ms endpoint, gevent 8, Redis):
# multiplier 1 -> 4.0 tasks/s, 2 -> 30.1, 4 -> 28.8, 8 -> 30.1. With a full prefetch window
# Celery's loop for gevent/eventlet (synloop) only asks Redis for the next message when its
# 2 s drain timeout expires, so each freed greenlet idles ~2 s. Tasks are short and acked
# late: a window of 4 per slot costs nothing and loses nothing. (The threads pool's event loop
# does not poll; the wide sweep ran it with 4 too.)
EMBEDDING_PREFETCH_MULTIPLIER = 4

# ---- the fleet ----------------------------------------------------------------------------
# Redis delivers a task again when it was not acknowledged within visibility_timeout of being
# handed to a worker. With acks late that covers the time a message waits in the worker's
# prefetch window and the time it runs: embedding workers hold 4 messages per task slot (so
# the last waits up to 3 task times, then runs one), LLM workers one. Any worker of the fleet
# may restore any other's messages, so the fleet shares one value: the largest. The margin
# covers clocks that differ between hosts (the worker that took a message stamps it with its
# clock, the one that restores it compares with its own). It is small because it is also how
# much longer the tasks of a dead worker (kill -9, OOM, power loss) wait to run again.
# (fleet_worker/config.py falls back to the same margin: tests/test_agreement.py)
VISIBILITY_MARGIN_S = 60


def visibility_timeout(all_settings: list[dict]) -> int:
    """The fleet's one visibility_timeout, from every host's settings."""
    longest = max([s["embedding_task_time_limit_s"] * EMBEDDING_PREFETCH_MULTIPLIER
                   for s in all_settings] + [s["llm_task_time_limit_s"] for s in all_settings]
                  + [0])
    return longest + VISIBILITY_MARGIN_S


# File descriptors of one embedding worker process. The units set LimitNOFILE=OPEN_FILES
# (inside the lab, and containers without CAP_SYS_RESOURCE, systemd clamps more than ~20000
# silently: LAB.md). Each task slot holds one HTTP connection while in flight, and the worker
# keeps up to two Redis connections per slot (fleet_worker/config.py: redis_connections =
# 2 x concurrency + 10: every slot may ack and store a result at once); the process itself
# (Python, Celery's own sockets, pipes) takes the rest, well under 100.
OPEN_FILES = 16384
FILES_PER_TASK_SLOT = 3
FILES_PER_PROCESS = 100


def max_slots_per_process() -> int:
    return (OPEN_FILES - FILES_PER_PROCESS) // FILES_PER_TASK_SLOT


# Memory of one embedding worker process: the reference app idle, and what each task slot adds
# while its request is in flight (benchmarks/slot_memory.py, every slot busy at once: idle
# 61 MB; gevent +95/89/84/78 KB a slot at 64/256/1024/2048 in flight, threads +136/111 KB at
# 64/256). The smallest per-slot figure is a floor: an app that holds bigger batches or
# vectors per task costs more, never less. Below it a plan cannot run: its process passes the
# memory watch's mark (MEMORY_RECYCLE_SHARE) before every slot is busy.
PROCESS_BASE_MB = 61
SLOT_KB = {"gevent": 78, "threads": 111}


def slots_memory_mb(pool: str, concurrency: int) -> float:
    return PROCESS_BASE_MB + concurrency * SLOT_KB.get(pool, 0) / 1024


def refuse_what_cannot_fit(host: str, facts: HostFacts, plan: EmbeddingPlan, s: dict) -> None:
    """Inventory values that make a plan the host cannot run: refused before any change."""
    most = PROCESSES_PER_CORE * facts.cores
    if s["embedding_processes"] is not None and plan.processes > most:
        raise SettingsError(host, "embedding_processes", s["embedding_processes"],
                            f"at most {most} on this host ({PROCESSES_PER_CORE} per core: more "
                            "lost throughput in fleet bench)")
    if plan.pool in IN_PROCESS_POOLS and plan.concurrency > max_slots_per_process():
        key = "embedding_concurrency"
        raise SettingsError(host, key, s[key], f"at most {max_slots_per_process()} tasks in "
                            f"flight per process ({plan.processes} process(es) here): each "
                            f"holds {FILES_PER_TASK_SLOT} connections and a process may open "
                            f"{OPEN_FILES} files (LimitNOFILE)")
    needed = slots_memory_mb(plan.pool, plan.concurrency)
    if plan.pool in IN_PROCESS_POOLS and needed > memory_recycle_mb(plan.memory_max_mb):
        key = "embedding_concurrency" if s["embedding_concurrency"] is not None \
            else "embedding_memory_max_mb"
        raise SettingsError(host, key, s[key], f"{plan.concurrency} {plan.pool} slots a process "
                            f"need at least {needed:.0f} MB ({PROCESS_BASE_MB} MB + "
                            f"{SLOT_KB[plan.pool]} KB a slot, benchmarks/slot_memory.py), over "
                            f"the memory watch's mark of {memory_recycle_mb(plan.memory_max_mb)} "
                            f"MB ({MEMORY_RECYCLE_SHARE:.0%} of MemoryMax "
                            f"{plan.memory_max_mb} MB): at most "
                            f"{slots_that_fit(plan.pool, plan.memory_max_mb)} slots, or a "
                            "larger embedding_memory_max_mb")


# ---- LLM worker ---------------------------------------------------------------------------
# SIZING.md, 8 CPU-bound inference tasks using all cores: concurrency 1 -> 0.39 tasks/s, mean
# completion 11.5 s; 2 -> 0.28/s, 17.4 s; 4 -> 0.26/s, 23.5 s. One at a time wins both.
# Real llama.cpp through Celery (benchmarks/inference.py, docs/BENCHMARKS.md "Real inference",
# 2 cores, 8 x 128 tokens): multi-threaded generations past the cores are ruinous (2 x 2
# 0.26/s, 4 x 2 0.12/s, 1 x 4 0.49/s vs 1 x 2 0.83/s; 4 x 1 did 1.26/s); 2 x 1 (two servers
# of one thread) did 1.32/s with a mean completion of 3.7 s vs 5.0 s, each generation 40 %
# slower (first 1.4 s vs 1.0 s) on a 110 M-parameter model. One at a time keeps the fastest
# single generation and the design's rule; llm_concurrency: cores (threads then 1 each) is the
# measured alternative.
LLM_CPU_CONCURRENCY = 1
# The design documents: 2 to 4 concurrent generations per GPU, by VRAM.
LLM_GPU_CONCURRENCY_MIN = 2
LLM_GPU_CONCURRENCY_MAX = 4
# Share of a GPU's VRAM usable by weights + KV cache (the CUDA context and allocator
# fragmentation take the rest; vLLM's default gpu_memory_utilization is 0.9 for this reason).
GPU_VRAM_USABLE_SHARE = 0.9
# VRAM an inference server takes beside the weights and the KV caches: the activations of a
# forward pass over a batch, the CUDA graphs it captures, the CUDA context. vLLM counts them
# inside its --gpu-memory-utilization and sizes the KV cache from what is left; it refuses
# to start when one --max-model-len sequence does not fit ("No available memory for the
# cache blocks": vllm-project/vllm#2248, #5274).
GPU_SERVER_RUNTIME_MB = 2048
# KV cache of one generation of 4096 tokens where the model's header does not say (a model on
# the host, a directory): a 7B model without grouped-query attention (Llama 2 7B: 32 layers x
# 32 heads x 128 x (key + value) x 2 bytes = 0.5 MB a token), the largest common 7B figure.
# Llama 3 8B (8 KV heads) takes a quarter of it. Scaled by llm_context_size.
KV_CACHE_MB_PER_4096_TOKENS = 2048

# The reference worker app holds no model (it calls the inference server on the host): a
# prefork LLM worker with its child takes ~150 MB (SIZING.md: prefork 2, 153 MB), threads ~65.
# 1 GB leaves room for long prompts and results; a worker app that loads the model in-process
# sets llm_memory_max_mb.
LLM_MEMORY_MAX_MB = 1024
LLM_SMALL_HOST_MEMORY_SHARE = 0.5

# ---- memory watch (both workers) ----------------------------------------------------------
# A worker above 80 % of its MemoryMax restarts warm at once (fleet_worker/memory.py; prefork
# children are replaced after their task); above 90 % (MemoryHigh=) the kernel reclaims its
# pages hard; at MemoryMax it is killed. The clean way out comes first, the kill last.
MEMORY_RECYCLE_SHARE = 0.8
MEMORY_HIGH_SHARE = 0.9


def memory_recycle_mb(memory_max_mb: int) -> int:
    return int(memory_max_mb * MEMORY_RECYCLE_SHARE)


def memory_high_mb(memory_max_mb: int) -> int:
    return int(memory_max_mb * MEMORY_HIGH_SHARE)


# ---- Redis --------------------------------------------------------------------------------
# Celery's Redis transport loses queued tasks if Redis evicts keys: only noeviction is safe.
REDIS_MAXMEMORY_POLICY = "noeviction"
# An AOF rewrite or RDB snapshot forks Redis; copy-on-write can double its memory in the worst
# case, so a dedicated broker gives Redis half its RAM, and a quarter when workers share it.
RABBITMQ_WATERMARK_MIN_MB = 256
# RabbitMQ's default (50 MB) is for development; its production checklist asks for room for
# the quorum queues' write-ahead log: 1 GB, far above the lab's messages, below any real disk
RABBITMQ_DISK_FREE_LIMIT_MB = 1024
REDIS_RAM_SHARE_DEDICATED = 0.5
REDIS_RAM_SHARE_WITH_WORKERS = 0.25
REDIS_MAXMEMORY_MIN_MB = 64


@dataclass(frozen=True)
class Gpu:
    index: int
    vram_mb: int
    name: str = ""
    uuid: str = ""


@dataclass(frozen=True)
class HostFacts:
    ram_mb: int
    cores: int
    gpus: tuple[Gpu, ...] = ()
    gpu_problem: str = ""  # why GPUs could not be detected (nvidia-smi failed), if so
    # the model the inference server loads (llm_model_path on the controller, or
    # llm_model_host_path on the host), as the shell found it. Size: None where there is none
    llm_model_mb: int | None = None
    llm_model_format: str = ""  # gguf, directory, other, absent, unreadable; "" unknown
    llm_model_kv_bytes_per_token: int | None = None  # from its GGUF header, where read
    llm_model_sha256: str = ""  # of the file uploaded from the controller
    arch: str = ""  # uname -m; "" where not read
    cpu_flags: tuple[str, ...] = ()  # of /proc/cpuinfo; () where not read


@dataclass(frozen=True)
class EmbeddingPlan:
    pool: str
    concurrency: int  # per worker process
    processes: int
    memory_max_mb: int  # per worker process
    max_tasks_per_child: int
    reasons: tuple[str, ...] = ()

    @property
    def total_concurrency(self) -> int:
        return self.concurrency * self.processes

    @property
    def instances(self) -> tuple[str, ...]:
        """systemd template instance names: celery-embedding-worker@1 ... @N."""
        return tuple(str(i) for i in range(1, self.processes + 1))


@dataclass(frozen=True)
class LlmInstance:
    name: str  # "cpu", or "gpu0", "gpu1", ... (the systemd template instance)
    gpu_index: int | None
    concurrency: int
    threads: int


@dataclass(frozen=True)
class LlmPlan:
    device: str  # "cpu" or "gpu"
    pool: str
    concurrency: int  # per instance (the smallest, where GPUs differ)
    threads: int
    instances: tuple[LlmInstance, ...]
    memory_max_mb: int  # per instance
    reasons: tuple[str, ...] = ()
    server: InferencePlan | None = None  # None: the user's own server (inference_server none)

    @property
    def gpu_instances(self) -> tuple[LlmInstance, ...]:
        """The instances pinned to a GPU, in GPU order (llm_gpu_api_urls follows it)."""
        return tuple(i for i in self.instances if i.gpu_index is not None)


@dataclass(frozen=True)
class RedisPlan:
    maxmemory_mb: int
    maxmemory_policy: str = REDIS_MAXMEMORY_POLICY
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class RabbitmqPlan:
    """RabbitMQ on a broker host (broker: rabbitmq): the memory it may use before it blocks
    publishers (its memory alarm), and the free disk below which it does too."""
    memory_watermark_mb: int
    disk_free_limit_mb: int
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostPlan:
    host: str
    facts: HostFacts
    roles: tuple[str, ...]
    embedding: EmbeddingPlan | None = None
    llm: LlmPlan | None = None
    redis: RedisPlan | None = None
    warnings: tuple[str, ...] = field(default=())
    rabbitmq: RabbitmqPlan | None = None

    def to_json(self) -> dict:
        out: dict = {"host": self.host, "facts": {
            "ram_mb": self.facts.ram_mb, "cores": self.facts.cores,
            "gpus_vram_mb": [g.vram_mb for g in self.facts.gpus]}}
        if self.embedding:
            out["embedding"] = dict(asdict(self.embedding), reasons=list(self.embedding.reasons),
                                    total_concurrency=self.embedding.total_concurrency)
        if self.llm:
            out["llm"] = {"device": self.llm.device, "pool": self.llm.pool,
                          "concurrency": self.llm.concurrency,
                          "instances": len(self.llm.instances), "threads": self.llm.threads,
                          "memory_max_mb": self.llm.memory_max_mb,
                          "per_instance": [asdict(i) for i in self.llm.instances],
                          "server": asdict(self.llm.server) if self.llm.server else None,
                          "reasons": list(self.llm.reasons)}
        if self.redis:
            out["redis"] = dict(asdict(self.redis), reasons=list(self.redis.reasons))
        if self.rabbitmq:
            out["rabbitmq"] = dict(asdict(self.rabbitmq), reasons=list(self.rabbitmq.reasons))
        out["warnings"] = list(self.warnings)
        return out


def apply_fact_overrides(detected: HostFacts, settings: dict) -> HostFacts:
    """Inventory values for ram_mb, cores and gpus win over what was detected."""
    gpus = detected.gpus
    problem = detected.gpu_problem
    if settings["gpus"] is not None:
        gpus = tuple(Gpu(i, vram) for i, vram in enumerate(settings["gpus"]))
        problem = ""
    return replace(
        detected,
        ram_mb=settings["ram_mb"] if settings["ram_mb"] is not None else detected.ram_mb,
        cores=settings["cores"] if settings["cores"] is not None else detected.cores,
        gpus=gpus, gpu_problem=problem)


# ---- the rules ----------------------------------------------------------------------------

def _ram_tier(facts: HostFacts) -> tuple[int, int, str]:
    """(tasks in flight on the host, memory MB for the host, why) from the RAM tiers."""
    for nominal, in_flight, memory in EMBEDDING_RAM_TIERS:
        if facts.ram_mb >= nominal * NOMINAL_SHARE:
            memory = min(memory, facts.ram_mb)
            return in_flight, memory, (f"{facts.ram_mb} MB RAM is the ~{nominal // 1024} GB "
                                       f"tier: {in_flight} in flight on the host, {memory} MB "
                                       "of memory")
    memory = int(facts.ram_mb * EMBEDDING_SMALL_HOST_MEMORY_SHARE)
    return EMBEDDING_SMALL_HOST_CONCURRENCY, memory, (
        f"{facts.ram_mb} MB RAM is below the ~4 GB tier: {EMBEDDING_SMALL_HOST_CONCURRENCY} in "
        "flight, half the RAM as memory ceiling")


def slots_per_process(latency_ms: float, cpu_ms: float,
                      headroom: float = SLOTS_PER_PROCESS_HEADROOM) -> int:
    """Greenlets or threads past which a second process helps: headroom x (latency + cpu) /
    cpu, the slots that keep one core busy."""
    return max(1, math.ceil(headroom * (latency_ms + cpu_ms) / cpu_ms))


def slots_per_core(latency_ms: float, cpu_ms: float) -> int:
    """The most in flight one core drives before the plan stops adding slots."""
    return slots_per_process(latency_ms, cpu_ms, SLOTS_PER_CORE_HEADROOM)


def slots_that_fit(pool: str, memory_max_mb: int) -> int:
    """Task slots one process may hold: its files (LimitNOFILE) and the memory watch's mark."""
    by_memory = int((memory_recycle_mb(memory_max_mb) - PROCESS_BASE_MB) * 1024
                    // SLOT_KB[pool])
    return max(0, min(max_slots_per_process(), by_memory))


def _endpoint_bound(s: dict, latency: float, cpu: float, hosts: int) -> tuple[int, str] | None:
    """The most in flight on one host that the endpoint can serve, where something about the
    endpoint is known (its capacity, its rate limit): (tasks, why), the tighter of the two."""
    bounds = []
    slot_ms = latency + cpu  # a slot holds its task for the request and the CPU around it
    rate = s["embedding_rate_limit_per_min"]
    if rate and s["embedding_latency_ms"]:
        fleet = math.ceil(LITTLE_LAW_HEADROOM * rate / 60 * slot_ms / 1000)
        host = max(1, math.ceil(fleet / hosts))
        bounds.append((host, f"rate limit {rate:g}/min x {slot_ms:g} ms a task x "
                       f"{LITTLE_LAW_HEADROOM} (Little's law) = {fleet} in flight fleet-wide, "
                       f"{host} on each of {hosts} host(s): more would only collect 429s"))
    endpoint = s["embedding_endpoint_concurrency"]
    if endpoint:
        # while a slot spends cpu ms in the worker, the endpoint serves another slot's request
        host = max(1, math.ceil(endpoint / hosts * slot_ms / latency))
        bounds.append((host, f"the endpoint serves {endpoint} requests at once, shared by "
                       f"{hosts} host(s); each task holds its slot {slot_ms:g} ms for "
                       f"{latency:g} ms of request: {host} in flight on this host"))
    return min(bounds) if bounds else None


def plan_embedding(facts: HostFacts, s: dict, embedding_hosts: int = 1) -> EmbeddingPlan:
    """The host's tasks in flight, split into processes (concurrency is per process)."""
    reasons = []
    tier_total, host_memory, why = _ram_tier(facts)
    reasons.append(why)
    pool = s["embedding_pool"]
    latency = s["embedding_latency_ms"] or ASSUMED_EMBEDDING_LATENCY_MS
    cpu = s["embedding_task_cpu_ms"] or ASSUMED_EMBEDDING_CPU_MS
    known = (f"{latency:g} ms latency{'' if s['embedding_latency_ms'] else ' (assumed)'} and "
             f"{cpu:g} ms CPU a task{'' if s['embedding_task_cpu_ms'] else ' (assumed)'}")
    if s["embedding_rate_limit_per_min"] and not s["embedding_latency_ms"]:
        reasons.append("rate limit given without embedding_latency_ms: concurrency not capped "
                       "by it (the workers still keep to the rate)")

    bound = _endpoint_bound(s, latency, cpu, max(1, embedding_hosts))
    if bound:
        total = bound[0]
        reasons.append(bound[1])
    else:
        total = tier_total
        reasons.append("nothing known about the endpoint's capacity or rate limit "
                       "(embedding_endpoint_concurrency, embedding_rate_limit_per_min): the "
                       "tier is the most this host sends at once")

    per_process = slots_per_process(latency, cpu) if pool in IN_PROCESS_POOLS else total
    per_core = slots_per_core(latency, cpu)
    if pool in IN_PROCESS_POOLS and total > per_core * facts.cores:
        total = per_core * facts.cores
        reasons.append(f"{facts.cores} core(s) drive at most {total} in flight ({per_core} a "
                       f"core at {known}: {SLOTS_PER_CORE_HEADROOM} x (latency + CPU) / CPU)")
    if s["embedding_concurrency"] is not None:
        total = s["embedding_concurrency"]
        reasons.append(f"embedding_concurrency={total} set in the inventory (the host's total)")

    processes = 1
    if pool in IN_PROCESS_POOLS:
        # never more processes than tasks in flight (each would round its share up), nor more
        # than the host's memory budget gives each the least a worker process needs
        most = min(PROCESSES_PER_CORE * facts.cores, total,
                   max(1, host_memory // EMBEDDING_MEMORY_MIN_MB))
        busy_cores = total * cpu / (latency + cpu)
        if busy_cores >= BUSY_CORES_SHARE * facts.cores:
            processes = most
            reasons.append(f"{total} in flight would keep {busy_cores:.1f} cores busy at "
                           f"{known}, of this host's {facts.cores}: {processes} processes (up "
                           f"to {PROCESSES_PER_CORE} a core, so none idles while its process "
                           "waits)")
        else:
            processes = min(math.ceil(total / per_process), most)
            if processes > 1:
                reasons.append(f"one process drives ~{per_process} at {known} "
                               f"({SLOTS_PER_PROCESS_HEADROOM} x (latency + CPU) / CPU): "
                               f"{processes} processes (at most {PROCESSES_PER_CORE} a core)")
    # as few processes as give each the same share: 20 over 16 would run 2 each, 32 in all
    processes = math.ceil(total / math.ceil(total / processes))
    if s["embedding_processes"] is not None:
        processes = s["embedding_processes"]
        reasons.append(f"embedding_processes={processes} set in the inventory")
    if pool == "solo":
        total, processes = 1, 1
        reasons.append("solo pool runs one task at a time")
    elif pool == "prefork":
        processes = 1
        reasons.append("prefork forks one child per task slot (~50 MB each)")
    concurrency = max(1, math.ceil(total / processes))

    memory_max = host_memory
    if processes > 1:
        memory_max = max(EMBEDDING_MEMORY_MIN_MB, host_memory // processes)
        reasons.append(f"the memory ceiling is shared: {memory_max} MB per process")
    if s["embedding_memory_max_mb"] is not None:
        memory_max = s["embedding_memory_max_mb"]
        reasons.append(f"embedding_memory_max_mb={memory_max} set in the inventory")
    if pool in IN_PROCESS_POOLS and s["embedding_concurrency"] is None:
        fits = slots_that_fit(pool, memory_max)
        if concurrency > fits:  # an explicit value that does not fit is refused instead
            concurrency = max(1, fits)
            reasons.append(f"{fits} slots a process fit its memory and files "
                           "(benchmarks/slot_memory.py, LimitNOFILE)")
    if processes > 1 or s["embedding_concurrency"] is not None:
        reasons.append(f"{processes} process(es) of {concurrency}: {processes * concurrency} in "
                       "flight on the host")
    return EmbeddingPlan(pool, concurrency, processes, memory_max,
                         s["embedding_max_tasks_per_child"], tuple(reasons))


def kv_cache_mb(facts: HostFacts, s: dict) -> tuple[int, str]:
    """(MB, why) of the KV cache one generation of llm_context_size tokens takes: the
    inventory's llm_kv_cache_per_task_mb; else from the model's GGUF header (llama.cpp
    allocates the whole context's cache when it starts: without this, a longer context
    would outgrow the server's MemoryMax); else KV_CACHE_MB_PER_4096_TOKENS scaled."""
    if s["llm_kv_cache_per_task_mb"] is not None:
        return s["llm_kv_cache_per_task_mb"], "llm_kv_cache_per_task_mb set"
    context = s["llm_context_size"]
    if facts.llm_model_kv_bytes_per_token:
        mb = math.ceil(facts.llm_model_kv_bytes_per_token * context / 2**20)
        return mb, (f"KV cache of {context} tokens from the model's GGUF header "
                    f"({facts.llm_model_kv_bytes_per_token} bytes a token)")
    mb = math.ceil(KV_CACHE_MB_PER_4096_TOKENS * context / 4096)
    return mb, (f"KV cache of {context} tokens at {KV_CACHE_MB_PER_4096_TOKENS} MB per 4096 "
                "(a 7B model without grouped-query attention; set llm_kv_cache_per_task_mb "
                "for yours)")


def _generations_that_fit(gpu: Gpu, s: dict, kv_mb: int) -> int:
    """Generations whose KV cache fits beside the weights: 0 when the model does not fit."""
    free = (gpu.vram_mb * GPU_VRAM_USABLE_SHARE - s["llm_model_vram_mb"]
            - GPU_SERVER_RUNTIME_MB)
    return int(free // kv_mb) if free > 0 else 0


def _gpu_concurrency(fits: int) -> int:
    """2 to 4 at once (the design documents); 1 only where no second generation fits."""
    return min(fits, LLM_GPU_CONCURRENCY_MAX) if fits >= LLM_GPU_CONCURRENCY_MIN else fits


def plan_llm(host: str, facts: HostFacts, s: dict) -> tuple[LlmPlan, list[str]]:
    warnings: list[str] = []
    reasons: list[str] = []
    usable = []
    kv_mb, _ = kv_cache_mb(facts, s)
    for gpu in facts.gpus:
        fits = _generations_that_fit(gpu, s, kv_mb)
        if fits == 0:
            warnings.append(f"GPU {gpu.index} ({gpu.vram_mb} MB) cannot hold the model "
                            f"({s['llm_model_vram_mb']} MB) and one generation: not used")
        else:
            usable.append((gpu, fits))
    if facts.gpu_problem:
        warnings.append(f"GPU detection failed ({facts.gpu_problem}): planning for CPU")

    if usable:
        pool = s["llm_pool"] or "threads"
        if pool not in LLM_GPU_POOLS:
            raise SettingsError(host, "llm_pool", pool, f"on a GPU host one of "
                                f"{', '.join(LLM_GPU_POOLS)} (CUDA cannot be used again in "
                                "a forked child)")
        threads = s["llm_threads"] or max(1, facts.cores // len(usable))
        instances = []
        for gpu, fits in usable:
            concurrency = s["llm_concurrency"] or _gpu_concurrency(fits)
            if pool == "solo":
                concurrency = 1
            instances.append(LlmInstance(f"gpu{gpu.index}", gpu.index, concurrency, threads))
            reasons.append(
                f"GPU {gpu.index}: {gpu.vram_mb} MB x {GPU_VRAM_USABLE_SHARE} - model "
                f"{s['llm_model_vram_mb']} MB - runtime {GPU_SERVER_RUNTIME_MB} MB leaves room "
                f"for {fits} x "
                f"{kv_mb} MB generations -> {concurrency} at once "
                f"({LLM_GPU_CONCURRENCY_MIN}-{LLM_GPU_CONCURRENCY_MAX} by design)")
        reasons.append(f"one worker per GPU, pinned with CUDA_VISIBLE_DEVICES; pool {pool}")
        if s["llm_concurrency"]:
            reasons.append(f"llm_concurrency={s['llm_concurrency']} set in the inventory")
        return LlmPlan("gpu", pool, min(i.concurrency for i in instances), threads,
                       tuple(instances), _llm_memory_max(facts, s, reasons),
                       tuple(reasons)), warnings

    pool = s["llm_pool"] or "prefork"
    if pool not in LLM_CPU_POOLS:
        raise SettingsError(host, "llm_pool", pool, f"on a host without GPUs one of "
                            f"{', '.join(LLM_CPU_POOLS)} (CPU inference is CPU-bound: "
                            "greenlets and threads only queue behind the GIL)")
    concurrency = LLM_CPU_CONCURRENCY
    reasons.append("CPU inference uses every core: one generation at a time is the fastest "
                   "generation; multi-threaded generations past the cores are 1.7-7x slower "
                   "(llama.cpp measured: docs/BENCHMARKS.md, Real inference); scale out with "
                   "hosts")
    if s["llm_concurrency"]:
        concurrency = s["llm_concurrency"]
        reasons.append(f"llm_concurrency={concurrency} set in the inventory")
    if pool == "solo":
        concurrency = 1
    threads = s["llm_threads"] or max(1, facts.cores // concurrency)
    reasons.append(f"{threads} inference thread(s) per generation ({facts.cores} cores / "
                   f"{concurrency})" if not s["llm_threads"] else f"llm_threads={threads} set")
    return LlmPlan("cpu", pool, concurrency, threads,
                   (LlmInstance("cpu", None, concurrency, threads),),
                   _llm_memory_max(facts, s, reasons), tuple(reasons)), warnings


def _llm_memory_max(facts: HostFacts, s: dict, reasons: list[str]) -> int:
    if s["llm_memory_max_mb"] is not None:
        reasons.append(f"llm_memory_max_mb={s['llm_memory_max_mb']} set in the inventory")
        return s["llm_memory_max_mb"]
    memory_max = min(LLM_MEMORY_MAX_MB, int(facts.ram_mb * LLM_SMALL_HOST_MEMORY_SHARE))
    reasons.append(f"{memory_max} MB of memory per instance: the worker holds no model, it "
                   "calls the inference server")
    return memory_max


def plan_redis(facts: HostFacts, s: dict, shares_with_workers: bool) -> RedisPlan:
    if s["redis_maxmemory_mb"] is not None:
        return RedisPlan(s["redis_maxmemory_mb"], reasons=("redis_maxmemory_mb set in the "
                                                            "inventory",))
    share = REDIS_RAM_SHARE_WITH_WORKERS if shares_with_workers else REDIS_RAM_SHARE_DEDICATED
    why = "workers share this host" if shares_with_workers else "dedicated broker"
    if s["broker"] == "rabbitmq":  # Redis keeps results and the rate limit only
        share /= 2
        why += "; half of it for RabbitMQ"
    maxmemory = max(REDIS_MAXMEMORY_MIN_MB, int(facts.ram_mb * share))
    return RedisPlan(maxmemory, reasons=(
        f"{share:.1%} of {facts.ram_mb} MB ({why}; a fork for persistence can double Redis's "
        "memory)", f"maxmemory-policy {REDIS_MAXMEMORY_POLICY}: Celery loses tasks if Redis "
        "evicts"))


def plan_rabbitmq(facts: HostFacts, s: dict, shares_with_workers: bool) -> RabbitmqPlan:
    """The broker's share of RAM (as Redis's), halved: Redis keeps the results beside it."""
    share = (REDIS_RAM_SHARE_WITH_WORKERS if shares_with_workers
             else REDIS_RAM_SHARE_DEDICATED) / 2
    watermark = max(RABBITMQ_WATERMARK_MIN_MB, int(facts.ram_mb * share))
    return RabbitmqPlan(watermark, RABBITMQ_DISK_FREE_LIMIT_MB, reasons=(
        f"memory watermark {share:.1%} of {facts.ram_mb} MB: above it RabbitMQ blocks "
        "publishers until consumers catch up (its memory alarm), rather than be killed",
        f"disk free limit {RABBITMQ_DISK_FREE_LIMIT_MB} MB: quorum queues write every "
        "message to disk; below it publishers are blocked (RabbitMQ's production checklist)"))


ALL_ROLES = ("broker", "embedding", "llm")


def _ports_taken(s: dict, roles: tuple[str, ...]) -> dict[int, str]:
    """What else of ours listens on a host: {port: the setting or role that takes it}."""
    taken = {}
    if s["fake_openai_backend"]:
        taken[FAKE_OPENAI_PORT] = "the fake API (fake_openai_backend)"
    if "broker" in roles:
        taken[s["redis_port"]] = f"Redis (redis_port={s['redis_port']})"
        if s["broker"] == "rabbitmq":
            taken[s["rabbitmq_port"]] = f"RabbitMQ (rabbitmq_port={s['rabbitmq_port']})"
            taken[s["rabbitmq_port"] + RABBITMQ_DIST_PORT_OFFSET] = "RabbitMQ's cluster port"
            taken[EPMD_PORT] = "epmd (RabbitMQ)"
        if s["flower"]:
            taken[s["flower_port"]] = f"Flower (flower_port={s['flower_port']})"
    return taken


def plan_host(host: str, detected: HostFacts, data: dict, roles: tuple[str, ...] = ALL_ROLES,
              embedding_hosts: int = 1) -> HostPlan:
    """The plan for one host. data: its Settings, or its inventory values (resolved here)."""
    settings = resolve(host, data)
    facts = apply_fact_overrides(detected, settings)
    warnings: list[str] = []
    embedding = llm = redis = None
    if "embedding" in roles:
        embedding = plan_embedding(facts, settings, embedding_hosts)
        refuse_what_cannot_fit(host, facts, embedding, settings)
    if "llm" in roles:
        llm, llm_warnings = plan_llm(host, facts, settings)
        from .inference import plan_inference  # it imports this module's plans

        llm = plan_inference(host, facts, settings, llm, _ports_taken(settings, roles))
        warnings += llm_warnings
    rabbitmq = None
    if "broker" in roles:
        redis = plan_redis(facts, settings, shares_with_workers=len(roles) > 1)
    if "broker" in roles and settings["broker"] == "rabbitmq":
        rabbitmq = plan_rabbitmq(facts, settings, shares_with_workers=len(roles) > 1)
    return HostPlan(host, facts, tuple(roles), embedding, llm, redis, tuple(warnings),
                    rabbitmq)
