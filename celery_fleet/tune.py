"""`fleet tune`'s core (pure): from what the running fleet measured to the settings the plan
uses (embedding_task_cpu_ms, embedding_latency_ms, embedding_endpoint_concurrency), with the
evidence, or a refusal saying how much more it needs. The shell is celery_fleet/tune_probe.py;
`fleet bench` computes its tuned plan with the same functions.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field

# Too little data gives a wrong plan: the CPU per task of a few tasks is mostly Celery's own
# start (imports, connections), and a probe of a few requests is one network hiccup away from
# a latency twice the real one.
MIN_EMBEDDING_TASKS = 200  # done by the embedding workers during the window, fleet-wide
MIN_PROBE_OK = 20  # answers of the endpoint probe, at N at a time
# The probe's N: what the fleet could send at once if the endpoint took everything, so that
# "it keeps up" means it keeps up with the most the plan could use; at most this many threads
# from one host (beyond, the probe's own CPU is the bound, and the figure a lower bound).
PROBE_MAX_CONCURRENCY = 256
# Past this share of N served at once, the endpoint kept up with the probe: its capacity is at
# least what was measured (a lower bound).
KEEPS_UP_SHARE = 0.8


@dataclass(frozen=True)
class WorkerCounters:
    """One worker process as `celery inspect stats` reports it: CPU seconds (rusage utime +
    stime) and tasks done (the sum of `total`), since it started."""
    node: str
    cpu_s: float
    tasks: int
    pid: int = 0


@dataclass
class Measured:
    values: dict = field(default_factory=dict)  # setting -> measured value
    evidence: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)


def cpu_per_task_ms(before: dict[str, WorkerCounters], after: dict[str, WorkerCounters],
                    nodes: set[str]) -> tuple[float, int, float]:
    """(ms of CPU per task, tasks, CPU s) of the given worker nodes between two readings. A
    worker that restarted in between (another pid, or counters that went down) is left out."""
    cpu = tasks = 0.0
    for node in nodes:
        a, b = before.get(node), after.get(node)
        if not a or not b or a.pid != b.pid or b.tasks < a.tasks or b.cpu_s < a.cpu_s:
            continue
        cpu += b.cpu_s - a.cpu_s
        tasks += b.tasks - a.tasks
    return (cpu * 1000 / tasks if tasks else 0.0), int(tasks), cpu


def probe_concurrency(cores: int, slots_per_core: int, hosts: int) -> int:
    """N for the probe: the most in flight the fleet's cores could drive (sizing.slots_per_core)."""
    return max(2, min(PROBE_MAX_CONCURRENCY, cores * slots_per_core * hosts))


def endpoint_values(one: dict, many: dict, measured: Measured) -> None:
    """The endpoint's latency and capacity from the probe (one at a time, N at a time)."""
    if many["ok"] < MIN_PROBE_OK or not one["ok"]:
        measured.refusals.append(
            f"the endpoint probe got {one['ok'] + many['ok']} answers "
            f"({one['failed'] + many['failed']} failed, "
            f"{one['rate_limited'] + many['rate_limited']} rate limited): it needs at least "
            f"{MIN_PROBE_OK} at {many['concurrency']} at a time")
        return
    measured.values["embedding_latency_ms"] = one["p50_ms"]
    measured.evidence.append(f"endpoint latency p50 {one['p50_ms']} ms one at a time "
                             f"({one['ok']} requests), p50 {many['p50_ms']} ms at "
                             f"{many['concurrency']} at a time")
    if many["rate_limited"]:
        measured.evidence.append(
            f"{many['rate_limited']} of {many['requests']} probe requests answered 429: the "
            "rate limit bounds the endpoint, not its capacity; give embedding_rate_limit_per_min")
        return
    served = many["per_s"] / one["per_s"] if one["per_s"] else 0.0
    capacity = max(1, round(served))  # 7.96 measured is the 8 it serves, not 7
    lower_bound = served >= KEEPS_UP_SHARE * many["concurrency"]
    measured.values["embedding_endpoint_concurrency"] = capacity
    measured.evidence.append(
        f"the endpoint served {served:.1f} requests at once ({many['per_s']} / {one['per_s']} "
        f"requests/s at {many['concurrency']} and 1 at a time)"
        + (": it kept up, so it serves at least that many" if lower_bound else ""))


def cpu_values(cpu_ms: float, tasks: int, cpu_s: float, window_s: float, hosts: int,
               measured: Measured) -> None:
    if tasks < MIN_EMBEDDING_TASKS:
        measured.refusals.append(
            f"the embedding workers did {tasks} tasks in {window_s:.0f} s: the CPU per task "
            f"needs at least {MIN_EMBEDDING_TASKS}; run fleet tune while tasks flow, or with a "
            f"longer --window (at this pace about "
            f"{_window_for(tasks, window_s):.0f} s)")
        return
    measured.values["embedding_task_cpu_ms"] = round(cpu_ms, 1)
    measured.evidence.append(f"CPU per embedding task {cpu_ms:.1f} ms: {cpu_s:.1f} CPU-s for "
                             f"{tasks} tasks in {window_s:.0f} s on {hosts} host(s)")


def _window_for(tasks: int, window_s: float) -> float:
    rate = tasks / window_s if window_s else 0
    return MIN_EMBEDDING_TASKS / rate * 1.2 if rate else float("inf")


# ---- the journal: what the workers logged during the window -------------------------------
# Celery's worker logs one line per task at INFO (the units run --loglevel=INFO):
#   Task myapp.embed[6f1c...] succeeded in 0.2134s: ...
#   Task myapp.embed[6f1c...] retry: Retry in 1s: RetryableAPIError('... answered 429')
SUCCEEDED = re.compile(r"Task (\S+)\[[^\]]+\] succeeded in ([0-9.]+)s")
RETRY = re.compile(r"Task (\S+)\[[^\]]+\] retry: ")


@dataclass
class JournalSummary:
    runtimes_s: list[float] = field(default_factory=list)
    retries: int = 0
    retries_429: int = 0
    failed: int = 0


def parse_journal(lines: list[str]) -> JournalSummary:
    summary = JournalSummary()
    for line in lines:
        if match := SUCCEEDED.search(line):
            summary.runtimes_s.append(float(match.group(2)))
        elif RETRY.search(line):
            summary.retries += 1
            summary.retries_429 += "429" in line
        elif "] raised unexpected:" in line:
            summary.failed += 1
    return summary


def runtime_evidence(what: str, journal: JournalSummary) -> str:
    if not journal.runtimes_s:
        return f"{what}: no task finished in the window"
    runtimes = sorted(journal.runtimes_s)
    p95 = runtimes[math.ceil(0.95 * len(runtimes)) - 1]  # nearest rank
    return (f"{what}: {len(runtimes)} tasks, runtime p50 {statistics.median(runtimes) * 1000:.0f}"
            f" ms, p95 {p95 * 1000:.0f} ms; {journal.retries} retries ({journal.retries_429} "
            f"after a 429), {journal.failed} failed")


# ---- what tune writes ---------------------------------------------------------------------

def set_by_the_inventory(host_data: dict[str, dict], values: dict) -> list[str]:
    """Measured values a host's own inventory data overrides (host data wins over group
    data): the measurement does not reach those hosts until the inventory lets it."""
    lines = []
    for key in values:
        hosts = sorted(name for name, data in host_data.items() if key in data)
        if hosts:
            lines.append(f"{key} is set in the inventory for {', '.join(hosts)}: those hosts keep "
                         f"their value; remove it there for the measured {values[key]} to apply")
    return lines


def group_data_text(measured: Measured, inventory_path: str, when: str) -> str:
    """The group_data file: the values, and the evidence as its docstring."""
    evidence = "\n".join(f"- {line}" for line in measured.evidence)
    values = "\n".join(f"{key} = {value!r}" for key, value in sorted(measured.values.items()))
    return (f'"""Measured by `fleet tune {inventory_path}` on {when}; the next deploy applies '
            "it.\n\nHost data in the inventory wins over these values. Run fleet tune again "
            "to measure again; delete\nthis file to go back to the defaults "
            "(docs/TUNING.md).\n\nEvidence:\n"
            f'{evidence}\n"""\n\n{values}\n')


# ---- the LLM side: a report, nothing written ----------------------------------------------
# Idle share of the window under which the LLM workers are called busy, and the runtime ratio
# at which generations at once on a GPU are said to slow each other down.
LLM_BUSY_SHARE = 0.9


def llm_report(host: str, plan, settings: dict, journal: JournalSummary, window_s: float,
               waiting_before: dict, waiting_after: dict) -> list[str]:
    """What the LLM workers of one host did in the window, and whether another concurrency
    would serve better. The rules stay the defaults (sizing.py); this only reports."""
    llm = plan.llm
    slots = sum(i.concurrency for i in llm.instances)
    if not journal.runtimes_s:
        return [f"{host}: no generation finished in {window_s:.0f} s: nothing to judge"]
    runtimes = sorted(journal.runtimes_s)
    p50 = statistics.median(runtimes)
    busy = sum(runtimes) / (window_s * slots)  # share of the slots' time spent generating
    waiting = [q for q in settings["llm_queues"]
               if waiting_before.get(q, 0) > 0 and waiting_after.get(q, 0) > 0]
    lines = [f"{host}: {len(runtimes)} generations in {window_s:.0f} s on {slots} slot(s) "
             f"({llm.device}, {', '.join(f'{i.name} x{i.concurrency}' for i in llm.instances)})"
             f", p50 {p50:.2f} s, busy {busy:.0%}; "
             + (f"tasks waited in {', '.join(waiting)} the whole window" if waiting
                else "the queue emptied")]
    cores = plan.facts.cores
    if llm.device == "cpu" and slots > 1 and slots * llm.threads > cores:
        # fewer threads each where that fits the cores; past one thread each, fewer at once
        fix = (f"llm_threads={cores // slots}" if cores >= slots else
               f"llm_concurrency={max(1, cores // llm.threads)}")
        lines.append(f"{host}: {slots} generations at once x {llm.threads} thread(s) on "
                     f"{cores} cores: threads past the cores made every generation 1.7-7x "
                     f"slower (docs/BENCHMARKS.md, Real inference); try {fix} or "
                     "llm_concurrency=1, and compare with fleet tune")
    elif llm.device == "cpu" and slots > 1:
        lines.append(f"{host}: {slots} generations at once of {llm.threads} thread(s): more "
                     "generations a second than one at a time with every core, each one slower "
                     "(measured 1.32/s vs 0.83/s, first answer 1.4 s vs 1.0 s: "
                     "docs/BENCHMARKS.md, Real inference); llm_concurrency=1 if each answer's "
                     "latency matters more than the queue's")
    elif waiting and busy >= LLM_BUSY_SHARE:
        if llm.device == "cpu":
            lines.append(f"{host}: busy the whole window with work waiting: CPU inference "
                         "scales out, add hosts to llm_workers")
        else:
            lines.append(f"{host}: busy the whole window with work waiting: where VRAM holds "
                         "more generations, a higher llm_concurrency (at most 4 by design) "
                         "or more GPUs serve more; fleet tune again shows whether p50 grew")
    return lines
