"""Plans as people read them: a one-line summary, and the full plan with the reason for each
number (`fleet plan`). Pure."""

from __future__ import annotations

from .inference import InferencePlan
from .sizing import EmbeddingPlan, HostPlan, memory_recycle_mb


def _memory(memory_max_mb: int) -> str:
    return (f"MemoryMax {memory_max_mb} MB (warm restart above "
            f"{memory_recycle_mb(memory_max_mb)} MB)")


def embedding_line(e: EmbeddingPlan) -> str:
    """"gevent x16 in 2 processes" """
    return f"{e.pool} x{e.concurrency}" + (f" in {e.processes} processes" if e.processes > 1
                                          else "")


def plan_summary(plan: HostPlan) -> str:
    parts = []
    if plan.embedding:
        parts.append(f"embedding {embedding_line(plan.embedding)}")
    if plan.llm:
        instances = ", ".join(f"{i.name} x{i.concurrency}" for i in plan.llm.instances)
        server = f", {plan.llm.server.server} server(s)" if plan.llm.server else ""
        parts.append(f"llm {plan.llm.pool} [{instances}]{server}")
    if plan.rabbitmq:
        parts.append(f"rabbitmq watermark {plan.rabbitmq.memory_watermark_mb} MB")
    if plan.redis:
        parts.append(f"redis maxmemory {plan.redis.maxmemory_mb} MB")
    return "; ".join(parts) or "nothing to run"


def format_plan(plan: HostPlan) -> str:
    f = plan.facts
    gpus = ", ".join(f"GPU {g.index} {g.vram_mb} MB" for g in f.gpus) or "no GPU"
    lines = [f"{plan.host}: {f.ram_mb} MB RAM, {f.cores} cores, {gpus}"]
    if plan.embedding:
        e = plan.embedding
        children = (f", max-tasks-per-child {e.max_tasks_per_child}" if e.pool == "prefork"
                    else "")
        lines.append(f"  embedding worker: pool {e.pool}, concurrency {e.concurrency} x "
                     f"{e.processes} process(es), {_memory(e.memory_max_mb)}{children}")
        lines += [f"    - {reason}" for reason in e.reasons]
    if plan.llm:
        l = plan.llm
        lines.append(f"  llm worker: {l.device}, pool {l.pool}, {len(l.instances)} instance(s), "
                     f"{_memory(l.memory_max_mb)}")
        for i in l.instances:
            pinned = f", CUDA_VISIBLE_DEVICES={i.gpu_index}" if i.gpu_index is not None else ""
            lines.append(f"    {i.name}: concurrency {i.concurrency}, {i.threads} thread(s)"
                         f"{pinned}")
        lines += _server_lines(l.server)
        lines += [f"    - {reason}" for reason in l.reasons]
    if plan.rabbitmq:
        lines.append(f"  rabbitmq: memory watermark {plan.rabbitmq.memory_watermark_mb} MB, "
                     f"disk free limit {plan.rabbitmq.disk_free_limit_mb} MB")
        lines += [f"    - {reason}" for reason in plan.rabbitmq.reasons]
    if plan.redis:
        lines.append(f"  redis: maxmemory {plan.redis.maxmemory_mb} MB, policy "
                     f"{plan.redis.maxmemory_policy}")
        lines += [f"    - {reason}" for reason in plan.redis.reasons]
    lines += [f"  WARNING: {warning}" for warning in plan.warnings]
    return "\n".join(lines)


def _server_lines(server: InferencePlan | None) -> list[str]:
    if server is None:
        return ["  inference server: none (the worker calls llm_api_url: your own server)"]
    uploaded = f", uploaded from {server.upload_from}" if server.upload_from else ""
    lines = [f"  inference server: {server.server} ({server.source}), model "
             f"{server.model_path}{uploaded}, context {server.context_size}, MemoryMax "
             f"{server.memory_max_mb} MB each"]
    for i in server.instances:
        gpu = (f", GPU {i.gpu_index} at {i.gpu_memory_utilization:.0%} of its VRAM"
               if i.gpu_index is not None else f", {i.threads} thread(s)")
        lines.append(f"    {i.name}: {i.url}, {i.slots} at once{gpu}")
    return lines
