"""Tasks under load on a deployed lab, and what became of each one: used by the lab's
reliability tests (tests/lab/test_rabbitmq.py) and benchmarks/broker_faults.py, which repeat
a fault and print how many tasks completed, were lost or ran twice.

`lab` is a running lab with `ssh(name, command, timeout=...)` (pytest_plugin.RunningLab).
Tasks are sent and collected on a worker host, as its service user with its .env loaded: as
an application of the fleet does. Every result is checked against the fake API's pure
functions (files/fake_openai_server.py).
"""

from __future__ import annotations

import json
import runpy
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from .. import layout

FAKE = runpy.run_path(str(Path(__file__).resolve().parents[2] / "files" /
                          "fake_openai_server.py"))
VENV = "/opt/celery-fleet/venv/bin"

SUBMIT = r"""
import json, sys
from fleet_worker.tasks import embed, generate
tag, embeddings, generations = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ids = [embed.delay([f"{tag} {i}"]).id for i in range(embeddings)]
ids += [generate.delay(f"{tag} {i}").id for i in range(generations)]
print(json.dumps(ids))
"""

COLLECT_BY_DEADLINE = r"""
import json, sys, time
from celery.exceptions import TimeoutError
from celery.result import AsyncResult
from fleet_worker.app import app
ids, values = json.load(sys.stdin), []
deadline = time.monotonic() + float(sys.argv[1])
for i in ids:
    try:
        values.append(AsyncResult(i, app=app).get(timeout=max(deadline - time.monotonic(), 1)))
    except TimeoutError:
        values.append(None)
print(json.dumps(values))
"""


def as_service_user(lab, host: str, command: str, timeout: float = 120,
                    stdin: str = "") -> str:
    prefix = f"echo {shlex.quote(stdin)} | " if stdin else ""
    return lab.ssh(host, f"{prefix}sudo -u celery {layout.ENV_EXEC} {layout.EMBEDDING_ENV} "
                         f"{command}", timeout=timeout).stdout


def submit(lab, host: str, tag: str, embeddings: int, generations: int) -> list[str]:
    out = as_service_user(lab, host, f"{VENV}/python -c {shlex.quote(SUBMIT)} "
                                     f"{shlex.quote(tag)} {embeddings} {generations}")
    return json.loads(out.strip().splitlines()[-1])


def results_by_deadline(lab, host: str, ids: list[str], timeout: float) -> list:
    """Each task's result, None for those without one once timeout has passed."""
    out = as_service_user(lab, host, f"{VENV}/python -c {shlex.quote(COLLECT_BY_DEADLINE)} "
                                     f"{timeout}", timeout=timeout + len(ids) + 120,
                          stdin=json.dumps(ids))
    return json.loads(out.strip().splitlines()[-1])


def expected(tag: str, embeddings: int, generations: int) -> list:
    return ([[FAKE["vector_of"](f"{tag} {i}")] for i in range(embeddings)]
            + [FAKE["completion_of"](f"{tag} {i}") for i in range(generations)])


def served(lab, hosts: tuple[str, ...]) -> dict:
    """API calls the fake backends of these worker hosts answered so far."""
    total = {"texts": 0, "completions": 0}
    for host in hosts:
        out = lab.ssh(host, "python3 -c 'import urllib.request; print(urllib.request.urlopen("
                            "\"http://127.0.0.1:8080/admin/stats\", timeout=10).read().decode())'")
        stats = json.loads(out.stdout)
        for key in total:
            total[key] += stats[key]
    return total


def wait_until_busy(lab, hosts: tuple[str, ...], before: dict, texts: int, completions: int,
                    timeout: float = 60) -> None:
    """Until the fleet has served this many more calls: tasks are flowing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = served(lab, hosts)
        if (now["texts"] - before["texts"] >= texts
                and now["completions"] - before["completions"] >= completions):
            return
        time.sleep(0.3)
    raise AssertionError(f"tasks did not start within {timeout} s")


@dataclass(frozen=True)
class Outcome:
    """What became of a batch of tasks."""
    tasks: int
    completed: int  # with the right result
    lost: list[int]  # indexes of tasks without a result by the deadline
    wrong: list[int]  # indexes of tasks with a wrong result
    twice: int  # API calls beyond one per task: tasks that ran again (acks late)
    seconds: float

    def line(self, what: str) -> str:
        return (f"{what}: {self.completed} of {self.tasks} tasks completed, "
                f"{len(self.lost)} lost, {len(self.wrong)} wrong, {self.twice} API call(s) "
                f"made twice, in {self.seconds:.0f} s")


def outcome(values: list, want: list, before: dict, after: dict, embeddings: int,
            generations: int, seconds: float) -> Outcome:
    lost = [i for i, v in enumerate(values) if v is None]
    wrong = [i for i, v in enumerate(values) if v is not None and v != want[i]]
    done_embeddings = sum(1 for i in range(embeddings) if i not in lost)
    done_generations = sum(1 for i in range(embeddings, embeddings + generations)
                           if i not in lost)
    twice = (after["texts"] - before["texts"] - done_embeddings
             + after["completions"] - before["completions"] - done_generations)
    return Outcome(len(values), len(values) - len(lost) - len(wrong), lost, wrong, twice,
                   seconds)


def main_pid(lab, host: str, unit: str) -> int:
    return int(lab.ssh(host, f"systemctl show -p MainPID --value {unit}").stdout)


def under_load(lab, workers: tuple[str, ...], tag: str, fault, embeddings: int = 600,
               generations: int = 6, timeout: float = 300) -> Outcome:
    """Send embeddings + generations from the first worker host, strike fault() once they
    are flowing (100 API calls served), then collect every result by the deadline."""
    before = served(lab, workers)
    start = time.monotonic()
    ids = submit(lab, workers[0], tag, embeddings, generations)
    wait_until_busy(lab, workers, before, texts=100, completions=0)
    fault()
    values = results_by_deadline(lab, workers[0], ids, timeout)
    return outcome(values, expected(tag, embeddings, generations), before,
                   served(lab, workers), embeddings, generations, time.monotonic() - start)
