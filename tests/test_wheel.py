"""The worker application's wheel: built once per source, safely from parallel deploys."""

import shutil
import threading
from pathlib import Path

from celery_fleet.wheel import build_wheel

WORKER = Path(__file__).resolve().parents[1] / "worker"


def test_parallel_builds_of_one_source_give_one_wheel(tmp_path):
    source = tmp_path / "worker"
    shutil.copytree(WORKER, source, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                  "__pycache__"))
    results, errors = [], []

    def build():
        try:
            results.append(build_wheel(source, tmp_path / "out"))
        except Exception as error:  # collected, asserted below
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    assert len(set(results)) == 1 and results[0].name.startswith("celery_fleet_worker-")
    assert list((tmp_path / "out").iterdir()) == [results[0].parent]  # no staging left


def test_an_application_with_its_own_build_backend_builds(tmp_path):
    """An operator's app built with hatchling (tests/sample_app): pip builds it in isolation,
    with the backend its pyproject.toml names, as it would for anyone."""
    source = tmp_path / "sample_app"
    shutil.copytree(Path(__file__).resolve().parent / "sample_app", source)
    wheel = build_wheel(source, tmp_path / "out")
    assert wheel.name == "textjobs-1.0.0-py3-none-any.whl"
