"""The worker application's wheel: built once per source, safely from parallel deploys."""

import shutil
import subprocess
import sys
import threading
from pathlib import Path

from celery_fleet.wheel import build_wheel

WORKER = Path(__file__).resolve().parents[1] / "worker"


def _entries(build_dir: Path) -> list[Path]:
    """What a build directory holds beside its lock file: wheels, and staging left behind."""
    return sorted(p for p in build_dir.iterdir() if p.name != ".lock")


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
    assert _entries(tmp_path / "out") == [results[0].parent]  # no staging left


# build_wheel in a process of its own, noting each `pip wheel` it runs in a file
COUNTING_BUILD = """
import sys
from pathlib import Path
from celery_fleet import wheel
run = wheel.subprocess.run
def counted(args, **kwargs):
    with open(sys.argv[3], "a") as runs:
        runs.write("pip wheel\\n")
    return run(args, **kwargs)
wheel.subprocess.run = counted
print(wheel.build_wheel(Path(sys.argv[1]), Path(sys.argv[2])))
"""


def test_greenlets_of_one_deploy_build_one_after_the_other_without_waiting_for_ever(tmp_path):
    """pyinfra prepares hosts in greenlets (gevent): the second build of a deploy takes the
    first's wheel. With flock() it waited for ever: gevent's subprocess left the lock held."""
    script = ("from gevent import monkey; monkey.patch_all()\n"
              "import sys, gevent; from pathlib import Path; from celery_fleet import wheel\n"
              "builds = [gevent.spawn(wheel.build_wheel, Path(sys.argv[1]), Path(sys.argv[2]))"
              " for _ in range(2)]\n"
              "gevent.joinall(builds, raise_error=True)\n"
              "print(*{b.value for b in builds})\n")
    source = tmp_path / "worker"
    shutil.copytree(WORKER, source, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                  "__pycache__"))
    done = subprocess.run([sys.executable, "-c", script, str(source), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(".whl") and len(done.stdout.split()) == 1, done.stdout


def test_two_controllers_building_one_source_at_once_build_it_once(tmp_path):
    """Two processes (two deploys at once: both releases' test labs) wait for each other's
    build instead of both building and racing to move it in place."""
    source = tmp_path / "worker"
    shutil.copytree(WORKER, source, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                  "__pycache__"))
    builds_run = tmp_path / "pip-wheel-runs"
    builds = [subprocess.Popen([sys.executable, "-c", COUNTING_BUILD, str(source),
                                str(tmp_path / "out"), str(builds_run)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    outputs = [build.communicate(timeout=300) for build in builds]
    assert [build.returncode for build in builds] == [0, 0], outputs
    wheels = {Path(out.strip()) for out, _ in outputs}
    assert len(wheels) == 1
    assert builds_run.read_text().count("pip wheel") == 1  # the second took the first's
    assert _entries(tmp_path / "out") == [next(iter(wheels)).parent]


def test_an_application_with_its_own_build_backend_builds(tmp_path):
    """An operator's app built with hatchling (tests/sample_app): pip builds it in isolation,
    with the backend its pyproject.toml names, as it would for anyone."""
    source = tmp_path / "sample_app"
    shutil.copytree(Path(__file__).resolve().parent / "sample_app", source)
    wheel = build_wheel(source, tmp_path / "out")
    assert wheel.name == "textjobs-1.0.0-py3-none-any.whl"
