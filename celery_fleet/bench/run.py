"""`fleet bench`: real `celery worker` processes against the fake OpenAI backend on this
machine, sweeping pools and concurrencies, to check the sizing core's choices.

Cases (as in ../shared/SIZING.md):
  a. embeddings, endpoint answering in 200 ms;
  b. embeddings, endpoint limited to 50 requests/s (burst 10), with the fleet-wide limiter the
     deploy configures (embedding_rate_limit_per_min=3000);
  c. CPU-bound inference: each completion burns CPU on every core (like llama.cpp).

Prints a table (config, tasks/s, ideal, ratio, worker RSS), marks the configuration the sizing
core chooses for this machine, writes results.json and bench.png. Figures, not assertions.
"""

from __future__ import annotations

import json
import os
import runpy
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from ..layout import EMBEDDING_QUEUE, LLM_QUEUE
from ..settings import DEFAULTS
from ..sizing import HostFacts, plan_embedding, plan_llm
from . import harness

EMBED_LATENCY_MS = 200
RATE_LIMIT_PER_S = 50
RATE_LIMIT_BURST = 10
# SIZING.md: end-to-end time of one embedding at 200 ms endpoint latency, measured
MEASURED_LATENCY_MS = 229
COMPLETION_WALL_S = 2.5  # one completion alone, on every core


@dataclass(frozen=True)
class Config:
    pool: str
    concurrency: int
    processes: int = 1

    @property
    def label(self) -> str:
        text = f"{self.pool} {self.concurrency}"
        return text + (f" x{self.processes} processes" if self.processes > 1 else "")


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
    mean_completion_s: float
    backend: dict = field(default_factory=dict)
    chosen: bool = False

    @property
    def ratio(self) -> float:
        return self.tasks_per_s / self.ideal_per_s if self.ideal_per_s else 0.0


def machine_facts() -> HostFacts:
    return HostFacts(ram_mb=psutil.virtual_memory().total // 2**20, cores=os.cpu_count() or 1)


def chosen_configs() -> dict[str, Config]:
    """What the sizing core plans for this machine, per case."""
    facts = machine_facts()
    plain = plan_embedding(facts, DEFAULTS)
    limited = plan_embedding(facts, dict(DEFAULTS, embedding_rate_limit_per_min=
                                         RATE_LIMIT_PER_S * 60,
                                         embedding_latency_ms=MEASURED_LATENCY_MS))
    llm, _ = plan_llm("bench", facts, DEFAULTS)
    return {"a": Config(plain.pool, plain.concurrency, plain.processes),
            "b": Config(limited.pool, limited.concurrency, limited.processes),
            "c": Config(llm.pool, llm.concurrency)}


class RssSampler(threading.Thread):
    def __init__(self, pids: list[int]):
        super().__init__(daemon=True)
        self.pids, self.peak, self.running = pids, 0.0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, sum(harness.tree_rss_mb(p) for p in self.pids))
            time.sleep(0.2)

    def stop(self) -> float:
        self.running = False
        self.join()
        return self.peak


def run_config(case: str, config: Config, broker: str, api_url: str, tasks: int,
               ideal_per_s: float, queue: str, env_extra: dict) -> Result:
    from fleet_worker.app import app
    from fleet_worker.tasks import embed, generate

    app.control.purge()
    env = harness.worker_env(broker, api_url, "embedding" if queue == EMBEDDING_QUEUE else "llm",
                             config.pool, config.concurrency, **env_extra)
    workers = [harness.celery_worker(env, queue, config.pool, config.concurrency,
                                     name=f"bench{i}") for i in range(config.processes)]
    processes = [w.__enter__() for w in workers]
    try:
        def send(n, prefix):
            if queue == EMBEDDING_QUEUE:
                return [(embed.apply_async(([f"{prefix} {i}"],), queue=queue), f"{prefix} {i}")
                        for i in range(n)]
            return [(generate.apply_async((f"{prefix} {i}",), queue=queue), f"{prefix} {i}")
                    for i in range(n)]

        warm = send(max(2, config.concurrency * config.processes), "warm")
        for result, _ in warm:
            result.get(timeout=300)
        stats_before = harness.backend_call(api_url, "/admin/stats")
        sampler = RssSampler([p.pid for p in processes])
        sampler.start()
        started = time.monotonic()
        sent = send(tasks, "text")
        errors, completions = 0, []
        for result, text in sent:
            try:
                value = result.get(timeout=600)
                completions.append(time.monotonic() - started)
                expected = [vector_of(text)] if queue == EMBEDDING_QUEUE else f"echo: {text}"
                errors += value != expected
            except Exception:  # a task that failed: counted, the sweep goes on
                errors += 1
        seconds = time.monotonic() - started
        rss = sampler.stop()
        stats_after = harness.backend_call(api_url, "/admin/stats")
    finally:
        for worker in workers:
            worker.__exit__(None, None, None)
    backend = {key: stats_after[key] - stats_before.get(key, 0) for key in stats_after
               if key != "max_in_flight"}
    return Result(case, config.label, tasks, round(seconds, 2), round(tasks / seconds, 2),
                  round(ideal_per_s, 2), round(rss, 1), errors,
                  round(statistics.mean(completions), 2) if completions else 0.0, backend)


vector_of = runpy.run_path(str(harness.FAKE_SERVER))["vector_of"]  # what the fake answers


# The configurations each case runs (the sizing core's choice is added when missing).
SWEEP = {
    "a": [Config("solo", 1), Config("prefork", 4), Config("threads", 8), Config("threads", 16),
          Config("threads", 32), Config("gevent", 8), Config("gevent", 16),
          Config("gevent", 32), Config("gevent", 64), Config("gevent", 16, 2),
          Config("gevent", 32, 2)],
    "b": [Config("gevent", c) for c in (4, 8, 12, 16, 32, 64)],
    "c": [Config("prefork", c) for c in (1, 2, 4)],
}


def runs_planned(cases: str, chosen: dict) -> int:
    return sum(len(_with(SWEEP[case], chosen[case])) for case in "abc" if case in cases)


def progress(done: int, total: int, elapsed_s: float) -> str:
    """Pure: "[3/21, 41 s, ~4 min left]" from the mean time of the runs so far."""
    left = elapsed_s / done * (total - done) if done else 0
    eta = f"~{left / 60:.0f} min left" if left >= 90 else f"~{left:.0f} s left"
    return f"[{done}/{total}, {elapsed_s:.0f} s, {eta}]"


def sweep(quick: bool, cases: str, say) -> list[Result]:
    chosen = chosen_configs()
    cores = os.cpu_count() or 1
    results: list[Result] = []
    scale = 0.5 if quick else 1.0
    with harness.local_redis() as broker:
        os.environ["CELERY_BROKER_URL"] = broker
        os.environ["CELERY_RESULT_BACKEND"] = broker
        if "a" in cases:
            with harness.fake_backend(latency_ms=EMBED_LATENCY_MS) as api:
                for config in _with(SWEEP["a"], chosen["a"]):
                    n = int((60 if config.concurrency * config.processes < 8 else 400) * scale)
                    ideal = config.concurrency * config.processes / (EMBED_LATENCY_MS / 1000)
                    results.append(_mark(run_config("a", config, broker, api, n, ideal,
                                                    EMBEDDING_QUEUE, {}), chosen["a"], config))
                    say(results[-1])
        if "b" in cases:
            with harness.fake_backend(latency_ms=EMBED_LATENCY_MS,
                                      rate_limit_per_s=RATE_LIMIT_PER_S,
                                      burst=RATE_LIMIT_BURST) as api:
                for config in _with(SWEEP["b"], chosen["b"]):
                    ideal = min(RATE_LIMIT_PER_S, config.concurrency / (EMBED_LATENCY_MS / 1000))
                    results.append(_mark(run_config(
                        "b", config, broker, api, int(300 * scale), ideal, EMBEDDING_QUEUE,
                        {"EMBEDDING_RATE_LIMIT_PER_S": RATE_LIMIT_PER_S,
                         "EMBEDDING_RATE_BURST": 1}), chosen["b"], config))
                    say(results[-1])
        if "c" in cases:
            with harness.fake_backend(completion_cpu_ms=COMPLETION_WALL_S * 1000 * cores,
                                      cpu_workers=cores) as api:
                for config in _with(SWEEP["c"], chosen["c"]):
                    results.append(_mark(run_config(
                        "c", config, broker, api, max(4, int(8 * scale)),
                        1 / COMPLETION_WALL_S, LLM_QUEUE, {}), chosen["c"], config))
                    say(results[-1])
    return results


def _with(configs: list[Config], chosen: Config) -> list[Config]:
    return configs if chosen in configs else [*configs, chosen]


def _mark(result: Result, chosen: Config, config: Config) -> Result:
    result.chosen = config == chosen
    return result


CASE_TITLES = {"a": f"a. embeddings, endpoint {EMBED_LATENCY_MS} ms",
               "b": f"b. embeddings, {RATE_LIMIT_PER_S} requests/s limit, fleet-wide limiter",
               "c": "c. CPU-bound inference, every core per completion"}


def format_table(results: list[Result]) -> str:
    lines = []
    for case in sorted({r.case for r in results}):
        rows = [r for r in results if r.case == case]
        best = max(rows, key=lambda r: r.tasks_per_s)
        lines += ["", CASE_TITLES[case],
                  f"  {'config':<26} {'tasks':>5} {'tasks/s':>8} {'ideal':>7} {'ratio':>6} "
                  f"{'mean s':>7} {'RSS MB':>7} {'errors':>6} {'429s':>5}"]
        for r in rows:
            mark = "  <- chosen" if r.chosen else ""
            lines.append(f"  {r.config:<26} {r.tasks:>5} {r.tasks_per_s:>8.2f} "
                         f"{r.ideal_per_s:>7.2f} {r.ratio:>6.2f} {r.mean_completion_s:>7.2f} "
                         f"{r.worker_rss_mb:>7.0f} {r.errors:>6} "
                         f"{r.backend.get('rate_limited', 0):>5}{mark}")
        chosen = next((r for r in rows if r.chosen), None)
        if chosen:
            lines.append(f"  chosen {chosen.config}: {chosen.tasks_per_s / best.tasks_per_s:.0%}"
                         f" of the best ({best.config}, {best.tasks_per_s:.1f}/s)")
        solo = next((r for r in rows if r.config == "solo 1"), None)
        if solo and chosen:
            lines.append(f"  chosen vs solo: {chosen.tasks_per_s / solo.tasks_per_s:.1f}x")
    return "\n".join(lines)


def write_chart(results: list[Result], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = sorted({r.case for r in results})
    figure, axes = plt.subplots(1, len(cases), figsize=(6 * len(cases), 4.5), squeeze=False)
    for axis, case in zip(axes[0], cases):
        rows = [r for r in results if r.case == case]
        colors = ["tab:orange" if r.chosen else "tab:blue" for r in rows]
        axis.bar(range(len(rows)), [r.tasks_per_s for r in rows], color=colors)
        axis.plot(range(len(rows)), [r.ideal_per_s for r in rows], "k_", markersize=18,
                  label="ideal")
        axis.set_xticks(range(len(rows)), [r.config for r in rows], rotation=45, ha="right")
        axis.set_ylabel("tasks/s")
        axis.set_title(CASE_TITLES[case], fontsize=9)
        axis.legend(fontsize=8)
    figure.suptitle("fleet bench: orange = the sizing core's choice for this machine")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(out_dir: str, quick: bool, cases: str) -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    facts = machine_facts()
    print(f"fleet bench on {facts.cores} cores, {facts.ram_mb} MB RAM; chosen: "
          + ", ".join(f"{c}: {cfg.label}" for c, cfg in chosen_configs().items()), flush=True)

    total, started, done = runs_planned(cases, chosen_configs()), time.monotonic(), []

    def say(result: Result) -> None:
        done.append(result)
        print(f"  [{result.case}] {result.config:<24} {result.tasks_per_s:7.1f} tasks/s "
              f"(ideal {result.ideal_per_s:.1f}, {result.errors} errors)  "
              f"{progress(len(done), total, time.monotonic() - started)}", flush=True)

    results = sweep(quick, cases, say)
    print(format_table(results))
    (out / "results.json").write_text(json.dumps(
        [dict(asdict(r), ratio=round(r.ratio, 3)) for r in results], indent=2) + "\n")
    write_chart(results, out / "bench.png")
    print(f"\nwrote {out / 'results.json'} and {out / 'bench.png'}")
    return 0
