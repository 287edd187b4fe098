"""`fleet bench`: real `celery worker` processes against the fake OpenAI backend on this
machine, sweeping pools, slots per process and processes well past what the plan chooses,
to find where the optimum lies and how close the plan comes to it.

Workloads (docs/BENCHMARKS.md):
  light     embeddings, endpoint answering in 200 ms, one short text a task (~2 ms CPU);
  heavy     embeddings, 200 ms, a batch of 48 texts x 1024 floats a task (~15 ms CPU: the
            JSON of the answer and the result);
  limited   light tasks, endpoint limited to 50 requests/s (burst 10), the fleet-wide limiter
            on (embedding_rate_limit_per_min=3000 known to the plan);
  inference CPU-bound completions burning every core (like llama.cpp).

For each embedding workload two plans are marked: the default (nothing measured) and the plan
after tune: the bench measures the default's CPU per task (the workers' CPU time over the
tasks they did, what `celery inspect stats` reports) and probes the endpoint with
files/fleet-probe, then plans with those values, as `fleet tune` does (celery_fleet/tune.py).

Each embedding run queues its tasks first, then starts the workers and counts the results
stored per second over a steady window: the client's own CPU (sending, reading results) is
not in the measurement, as it is not on a real worker host. Figures, not assertions.
"""

from __future__ import annotations

import json
import os
import runpy
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import psutil
import redis

from ..layout import EMBEDDING_QUEUE, FILES_DIR, LLM_QUEUE
from ..settings import DEFAULTS
from ..sizing import HostFacts, plan_embedding, plan_llm, slots_per_core
from .. import tune
from . import harness

EMBED_LATENCY_MS = 200
RATE_LIMIT_PER_S = 50
RATE_LIMIT_BURST = 10
COMPLETION_WALL_S = 2.5  # one completion alone, on every core
STEADY_WINDOW_S = 8.0  # results counted over this long once the workers run at pace
# The fake API and Redis stand for other machines, but share this one's cores: the embedding
# workers run at a lower priority, so they get only the CPU those two leave, and shapes with
# more threads or processes cannot win by taking the endpoint's CPU (a first run gave 4
# processes on 2 cores 114/s against 2 processes' 89/s on the heavy workload that way).
WORKER_NICE = 10
PROBE = runpy.run_path(str(FILES_DIR / "fleet-probe"))


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    fake: dict  # the fake API's options
    batch: int = 1  # texts a task
    same_texts: bool = False  # every task the same batch (the fake answers it from memory)
    queued: int = 3000  # tasks queued before the workers start (more than a window takes)
    known: dict = field(default_factory=dict)  # what the operator knows: settings
    worker_env: dict = field(default_factory=dict)


WORKLOADS = {
    "light": Workload("light", f"light: 1 text a task, endpoint {EMBED_LATENCY_MS} ms",
                      {"latency_ms": EMBED_LATENCY_MS}, queued=8000),
    "heavy": Workload("heavy", f"heavy: 48 texts x 1024 floats a task, {EMBED_LATENCY_MS} ms",
                      {"latency_ms": EMBED_LATENCY_MS, "dimensions": 1024}, batch=48,
                      same_texts=True, queued=1500),
    "limited": Workload(
        "limited", f"limited: {RATE_LIMIT_PER_S} requests/s, fleet-wide limiter",
        {"latency_ms": EMBED_LATENCY_MS, "rate_limit_per_s": RATE_LIMIT_PER_S,
         "burst": RATE_LIMIT_BURST}, queued=800,
        known={"embedding_rate_limit_per_min": RATE_LIMIT_PER_S * 60},
        worker_env={"EMBEDDING_RATE_LIMIT_PER_S": RATE_LIMIT_PER_S, "EMBEDDING_RATE_BURST": 1}),
}
CASE_KEYS = (*WORKLOADS, "inference")


@dataclass(frozen=True)
class Config:
    pool: str
    concurrency: int  # per process
    processes: int = 1

    @property
    def label(self) -> str:
        text = f"{self.pool} {self.concurrency}"
        return text + (f" x{self.processes}" if self.processes > 1 else "")


@dataclass
class Result:
    case: str
    config: str
    tasks: int
    seconds: float
    tasks_per_s: float
    ideal_per_s: float
    worker_rss_mb: float
    errors: int
    mean_completion_s: float = 0.0
    cpu_ms_per_task: float = 0.0
    backend: dict = field(default_factory=dict)
    marks: tuple[str, ...] = ()  # "default", "tuned"
    samples: tuple[float, ...] = ()  # tasks/s of every run of this shape (the median shown)

    @property
    def ratio(self) -> float:
        return self.tasks_per_s / self.ideal_per_s if self.ideal_per_s else 0.0


def machine_facts() -> HostFacts:
    return HostFacts(ram_mb=psutil.virtual_memory().total // 2**20, cores=os.cpu_count() or 1)


def as_config(plan) -> Config:
    return Config(plan.pool, plan.concurrency, plan.processes)


def default_config(workload: Workload) -> Config:
    return as_config(plan_embedding(machine_facts(), dict(DEFAULTS, **workload.known)))


SWEEP_SLOTS = (4, 16, 64, 256)  # tasks in flight a process
REPEATS = 3  # the best shapes and the plans' own run this often; the median counts
BEST_SHAPES_REPEATED = 3  # besides the default and tuned plans


def sweep_configs(cores: int) -> list[Config]:
    """Both in-process pools, 4 to 256 slots a process, one process and one per core."""
    return [Config(pool, c, p) for pool in ("threads", "gevent") for p in sorted({1, cores})
            for c in SWEEP_SLOTS]


def past(plan: Config) -> list[Config]:
    """Shapes past a plan on every axis (twice its slots a process, twice its processes), so
    the sweep shows whether more would have been better wherever the plan lands."""
    return [replace(plan, concurrency=plan.concurrency * 2),
            replace(plan, processes=plan.processes * 2)]


SWEEP_INFERENCE = [Config("prefork", c) for c in (1, 2, 4, 8)]


def runs_planned(cases: list[str], cores: int) -> int:
    """Every sweep run, the plans, the shapes past them and the repeats (an estimate: plans
    that fall on the grid run once less)."""
    per_workload = len(sweep_configs(cores)) + 2 * (1 + len(past(Config("threads", 1)))) \
        + (2 + BEST_SHAPES_REPEATED) * (REPEATS - 1)
    embedding = sum(1 for c in cases if c in WORKLOADS) * per_workload
    return embedding + (len(SWEEP_INFERENCE) if "inference" in cases else 0)


def progress(done: int, total: int, elapsed_s: float) -> str:
    """Pure: "[3/21, 41 s, ~4 min left]" from the mean time of the runs so far."""
    left = elapsed_s / done * (total - done) if done else 0
    eta = f"~{left / 60:.0f} min left" if left >= 90 else f"~{left:.0f} s left"
    return f"[{done}/{total}, {elapsed_s:.0f} s, {eta}]"


def _cpu_s(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def run_embedding(workload: Workload, config: Config, broker: str, results_url: str,
                  api_url: str) -> Result:
    """Queue the tasks, start the workers, count results stored per second at pace."""
    from fleet_worker.tasks import embed

    client = redis.Redis.from_url(broker)
    client.flushall()
    texts = [f"t{i}" for i in range(workload.batch)]
    def batch(i: int) -> list[str]:
        return texts if workload.same_texts else [f"{i} {t}" for t in texts]

    sent = [embed.apply_async((batch(i),), queue=EMBEDDING_QUEUE)
            for i in range(workload.queued)]
    stored = redis.Redis.from_url(results_url)
    stats_before = harness.backend_call(api_url, "/admin/stats")
    env = harness.worker_env(broker, api_url, "embedding", config.pool, config.concurrency,
                             CELERY_RESULT_BACKEND=results_url, **workload.worker_env)
    workers = [harness.celery_worker(env, EMBEDDING_QUEUE, config.pool, config.concurrency,
                                     name=f"bench{i}", nice=WORKER_NICE)
               for i in range(config.processes)]
    running = [w.__enter__() for w in workers]
    try:
        processes = [psutil.Process(p.pid) for p in running]
        # pace: once a tenth of what the window would take is done (every process started)
        deadline = time.monotonic() + 120
        while stored.dbsize() < max(20, workload.queued // 20) and time.monotonic() < deadline:
            time.sleep(0.1)
        done0, cpu0, t0 = stored.dbsize(), _cpu_s(processes), time.monotonic()
        peak_rss = 0.0
        while time.monotonic() - t0 < STEADY_WINDOW_S and \
                stored.dbsize() < workload.queued * 0.85:
            peak_rss = max(peak_rss, sum(harness.tree_rss_mb(p.pid) for p in running))
            time.sleep(0.25)
        done1, cpu1, t1 = stored.dbsize(), _cpu_s(processes), time.monotonic()
    finally:
        for worker in workers:
            worker.__exit__(None, None, None)
    stats_after = harness.backend_call(api_url, "/admin/stats")
    errors = 0
    for i, result in enumerate(sent[:30]):  # the first sent ran first: check their vectors
        value = result.get(timeout=30) if result.ready() else None
        expected = [vector_of(t, workload.fake.get("dimensions", 16)) for t in batch(i)]
        errors += value != expected
    tasks, seconds = done1 - done0, t1 - t0
    ideal = config.concurrency * config.processes / (EMBED_LATENCY_MS / 1000)
    if "rate_limit_per_s" in workload.fake:
        ideal = min(ideal, RATE_LIMIT_PER_S)
    return Result(workload.key, config.label, tasks, round(seconds, 2),
                  round(tasks / seconds, 1) if seconds else 0.0, round(ideal, 1),
                  round(peak_rss, 1), errors,
                  cpu_ms_per_task=round((cpu1 - cpu0) * 1000 / tasks, 2) if tasks else 0.0,
                  backend={k: stats_after[k] - stats_before.get(k, 0) for k in stats_after
                           if k != "max_in_flight"})


def tuned_config(workload: Workload, default: Result, api_url: str) -> tuple[Config, list[str]]:
    """The plan after tune: the default run's CPU per task, the endpoint probed."""
    facts = machine_facts()
    measured = tune.Measured()
    cpu_ms = default.cpu_ms_per_task
    tune.cpu_values(cpu_ms, default.tasks, cpu_ms * default.tasks / 1000, default.seconds, 1,
                    measured)
    n = tune.probe_concurrency(facts.cores, slots_per_core(EMBED_LATENCY_MS, cpu_ms or 1), 1)
    url = f"{api_url}/embeddings"
    headers = {"Content-Type": "application/json"}
    one = PROBE["measure"](url, headers, "fake", 12, 1)
    many = PROBE["measure"](url, headers, "fake", max(3 * n, tune.MIN_PROBE_OK), n)
    tune.endpoint_values(one, many, measured)
    settings = dict(DEFAULTS, **workload.known, **measured.values)
    return as_config(plan_embedding(facts, settings)), measured.evidence + measured.refusals


def run_inference(config: Config, broker: str, api_url: str, tasks: int) -> Result:
    from fleet_worker.app import app
    from fleet_worker.tasks import generate

    app.control.purge()
    env = harness.worker_env(broker, api_url, "llm", config.pool, config.concurrency)
    with harness.celery_worker(env, LLM_QUEUE, config.pool, config.concurrency) as process:
        warm = generate.apply_async(("warm",), queue=LLM_QUEUE)
        warm.get(timeout=300)
        started = time.monotonic()
        sent = [(generate.apply_async((f"text {i}",), queue=LLM_QUEUE), f"text {i}")
                for i in range(tasks)]
        errors, completions, rss = 0, [], 0.0
        for result, text in sent:
            try:
                errors += result.get(timeout=600) != f"echo: {text}"
                completions.append(time.monotonic() - started)
            except Exception:  # a task that failed: counted, the sweep goes on
                errors += 1
            rss = max(rss, harness.tree_rss_mb(process.pid))
        seconds = time.monotonic() - started
    return Result("inference", config.label, tasks, round(seconds, 2), round(tasks / seconds, 3),
                  round(1 / COMPLETION_WALL_S, 3), round(rss, 1), errors,
                  round(statistics.mean(completions), 2) if completions else 0.0)


def unique(configs: list[Config]) -> list[Config]:
    """In their first order, each once."""
    return list(dict.fromkeys(configs))


def median_run(samples: list[Result]) -> Result:
    """The run whose throughput is the median of the samples, with every sample's figure."""
    ordered = sorted(samples, key=lambda r: r.tasks_per_s)
    return replace(ordered[(len(ordered) - 1) // 2],
                   samples=tuple(r.tasks_per_s for r in samples))


def ranked(runs: dict[Config, list[Result]]) -> list[Config]:
    """Shapes from the highest median throughput down."""
    return sorted(runs, key=lambda c: median_run(runs[c]).tasks_per_s, reverse=True)


vector_of = runpy.run_path(str(harness.FAKE_SERVER))["vector_of"]  # what the fake answers


def sweep(quick: bool, cases: list[str], say) -> tuple[list[Result], dict]:
    cores = os.cpu_count() or 1
    results: list[Result] = []
    notes: dict[str, list[str]] = {}
    with harness.local_redis() as broker:
        results_url = broker.rsplit("/", 1)[0] + "/1"  # its own DB: DBSIZE = tasks done
        os.environ["CELERY_BROKER_URL"] = broker
        os.environ["CELERY_RESULT_BACKEND"] = results_url
        for key in (c for c in cases if c in WORKLOADS):
            workload = WORKLOADS[key]
            if quick:
                workload = replace(workload, queued=workload.queued // 2)
            with harness.fake_backend(**workload.fake) as api:
                runs: dict[Config, list[Result]] = {}

                def measure(config: Config) -> Result:
                    result = run_embedding(workload, config, broker, results_url, api)
                    runs.setdefault(config, []).append(result)
                    say(result)
                    return result

                default = default_config(workload)
                tuned, notes[key] = tuned_config(workload, measure(default), api)
                for config in unique([tuned, *past(default), *past(tuned),
                                      *sweep_configs(cores)]):
                    if config not in runs:
                        measure(config)
                # one run's luck must not pick the best: the plans and the best shapes by
                # median run REPEATS times
                while todo := [c for c in unique([default, tuned,
                                                  *ranked(runs)[:BEST_SHAPES_REPEATED]])
                               if len(runs[c]) < REPEATS]:
                    measure(todo[0])
                for config, samples in runs.items():
                    merged = median_run(samples)
                    merged.marks = tuple(mark for mark, plan in (("default", default),
                                                                 ("tuned", tuned))
                                         if plan == config)
                    results.append(merged)
        if "inference" in cases:
            with harness.fake_backend(completion_cpu_ms=COMPLETION_WALL_S * 1000 * cores,
                                      cpu_workers=cores) as api:
                chosen = plan_llm("bench", machine_facts(), DEFAULTS)[0]
                for config in SWEEP_INFERENCE:
                    result = run_inference(config, broker, api, 4 if quick else 8)
                    if config == Config(chosen.pool, chosen.concurrency):
                        result.marks = ("default",)
                    results.append(result)
                    say(result)
    return results, notes


TITLES = {**{k: w.title for k, w in WORKLOADS.items()},
          "inference": "inference: CPU-bound completions, every core each"}


def spread(result: Result) -> str:
    """"3: 590-640" for a shape run three times (the median is in the table)."""
    if len(result.samples) < 2:
        return "1"
    return f"{len(result.samples)}: {min(result.samples):.0f}-{max(result.samples):.0f}"


def format_table(results: list[Result], notes: dict) -> str:
    lines = []
    for case in CASE_KEYS:
        rows = [r for r in results if r.case == case]
        if not rows:
            continue
        best = max(rows, key=lambda r: r.tasks_per_s)
        lines += ["", TITLES[case],
                  f"  {'config':<18} {'tasks':>5} {'tasks/s':>8} {'ideal':>7} {'of best':>7} "
                  f"{'CPU ms':>6} {'mean s':>6} {'RSS MB':>6} {'errors':>6} {'429s':>5}  runs"]
        for r in rows:
            mark = f"  <- {' and '.join(r.marks)}" if r.marks else ""
            lines.append(f"  {r.config:<18} {r.tasks:>5} {r.tasks_per_s:>8.1f} "
                         f"{r.ideal_per_s:>7.1f} {r.tasks_per_s / best.tasks_per_s:>7.0%} "
                         f"{r.cpu_ms_per_task:>6.1f} {r.mean_completion_s:>6.1f} "
                         f"{r.worker_rss_mb:>6.0f} {r.errors:>6} "
                         f"{r.backend.get('rate_limited', 0):>5}  {spread(r)}{mark}")
        for mark in ("default", "tuned"):
            chosen = next((r for r in rows if mark in r.marks), None)
            if chosen:
                lines.append(f"  {mark} plan {chosen.config}: "
                             f"{chosen.tasks_per_s / best.tasks_per_s:.0%} of the best "
                             f"({best.config}, {best.tasks_per_s:.1f}/s)")
        if case == "inference":
            quickest = min(rows, key=lambda r: r.mean_completion_s)
            lines.append(f"  lowest mean completion: {quickest.config}, "
                         f"{quickest.mean_completion_s:.1f} s")
        lines += [f"  measured for the tuned plan: {n}" for n in notes.get(case, [])]
    return "\n".join(lines)


def write_chart(results: list[Result], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [c for c in CASE_KEYS if any(r.case == c for r in results)]
    figure, axes = plt.subplots(len(cases), 1, figsize=(11, 3.6 * len(cases)), squeeze=False)
    colors = {"default": "tab:orange", "tuned": "tab:green"}
    for axis, case in zip(axes[:, 0], cases):
        rows = [r for r in results if r.case == case]
        axis.bar(range(len(rows)), [r.tasks_per_s for r in rows],
                 color=[colors[r.marks[-1]] if r.marks else "tab:blue" for r in rows])
        axis.set_xticks(range(len(rows)), [r.config for r in rows], rotation=40, ha="right",
                        fontsize=8)
        axis.set_ylabel("tasks/s")
        axis.set_title(TITLES[case], fontsize=9)
    figure.suptitle("fleet bench: orange = default plan, green = plan after tune")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(out_dir: str, quick: bool, cases: str) -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = [c.strip() for c in cases.split(",")] if cases != "all" else list(CASE_KEYS)
    unknown = [c for c in chosen if c not in CASE_KEYS]
    if unknown:
        print(f"fleet bench: --cases {cases!r}: choose from {', '.join(CASE_KEYS)} or all")
        return 2
    facts = machine_facts()
    print(f"fleet bench on {facts.cores} cores, {facts.ram_mb} MB RAM: "
          + ", ".join(chosen), flush=True)
    total, started, done = runs_planned(chosen, facts.cores), time.monotonic(), []

    def say(result: Result) -> None:
        done.append(result)
        print(f"  [{result.case}] {result.config:<16} {result.tasks_per_s:7.1f} tasks/s "
              f"(CPU {result.cpu_ms_per_task:.1f} ms a task, {result.errors} errors)  "
              f"{progress(len(done), total, time.monotonic() - started)}", flush=True)

    results, notes = sweep(quick, chosen, say)
    print(format_table(results, notes))
    (out / "results.json").write_text(json.dumps(
        {"machine": {"cores": facts.cores, "ram_mb": facts.ram_mb}, "notes": notes,
         "results": [dict(asdict(r), ratio=round(r.ratio, 3)) for r in results]},
        indent=2) + "\n")
    write_chart(results, out / "bench.png")
    print(f"\nwrote {out / 'results.json'} and {out / 'bench.png'}")
    return 0
