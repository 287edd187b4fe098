"""Shared by the end-to-end tests: one deploy of the test lab per session."""

import json
import re
import runpy
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from celery_fleet import layout
from celery_fleet.lab.inventory import inventory_text
from celery_fleet.lab.pytest_plugin import OTHER, phase
from celery_fleet.wheel import (build_requirement_wheel, missing_compile_tools,
                                requirement_wheel_dir)

ROOT = Path(__file__).resolve().parents[2]
ENV_EXEC = "/usr/local/lib/celery-fleet/env-exec /etc/celery-fleet/embedding-worker.env"
VENV = "/opt/celery-fleet/venv/bin"
# the fake OpenAI API's pure functions: the result every task must return
FAKE = runpy.run_path(str(ROOT / "files" / "fake_openai_server.py"))


def run_pyinfra(lab, inventory: str, *options: str, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "pyinfra", "-y", *options, inventory,
                           "deploy.py"], cwd=ROOT, env=dict(lab.env(), **(env or {})),
                          capture_output=True, text=True, timeout=900)


def refused(lab, inventory="inventory/lab.py", *options: str) -> str:
    """A deploy that must stop before any host is changed: its output."""
    result = run_pyinfra(lab, inventory, *options)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "invalid inventory, no host was changed" in output, output[-3000:]
    return output


def deploy(lab, inventory="inventory/lab.py", *options: str, env: dict | None = None) -> dict:
    result = run_pyinfra(lab, inventory, *options, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    total = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", output)
    assert total, output[-2000:]
    count = lambda text: 0 if text == "-" else int(text)  # noqa: E731
    return {"output": output, "operations": int(total.group(1)),
            "changed": count(total.group(2)), "errors": count(total.group(3)),
            "unchanged": count(total.group(4))}


@pytest.fixture(scope="session", autouse=True)
def llama_wheel_built_meanwhile(request):
    """llama.cpp's wheel takes minutes to compile on the controller (213 s on 2 cores) and
    test_inference's first deploy needs it: built in the background from the session's start,
    while the labs boot and deploy (their hosts wait on apt and pip), instead of in that
    deploy. The deploy takes it from the cache (wheel.py's lock waits for a build under way).
    Only where test_inference runs and the wheel is not cached yet."""
    wanted = any(item.nodeid.startswith("tests/lab/test_inference.py")
                 for item in request.session.items)
    cache = requirement_wheel_dir(layout.LLAMACPP_REQUIREMENT, layout.LLAMACPP_CMAKE_ARGS,
                                  layout.SERVER_WHEEL_CACHE)
    if wanted and not missing_compile_tools(cache) and not any(cache.glob("*.whl")):
        threading.Thread(target=_build_llama_wheel, daemon=True, name="llama-wheel").start()


def _build_llama_wheel() -> None:
    with phase(OTHER, "llama.cpp's wheel, built in the background"):
        build_requirement_wheel(layout.LLAMACPP_REQUIREMENT, layout.LLAMACPP_CMAKE_ARGS,
                                layout.SERVER_WHEEL_CACHE)


@pytest.fixture(scope="session")
def deployed(lab):
    with phase(lab.suite, f"{lab.instance}: first deploy"):
        return deploy(lab)


def as_service_user(lab, host, command, timeout=60, stdin: str = ""):
    prefix = f"echo {shlex.quote(stdin)} | " if stdin else ""
    return lab.ssh(host, f"{prefix}sudo -u celery {ENV_EXEC} {command}", timeout=timeout).stdout


def wait_until_answers(lab, host: str, node: str, timeout: float = 60) -> None:
    """Until a worker that was just (re)started answers the broker: the next test must not
    find it starting (a worker on a 1-core host takes ~3 s)."""
    deadline = time.monotonic() + timeout
    while node not in as_service_user(lab, host, f"{VENV}/celery -A fleet_worker.app inspect "
                                                 f"ping --timeout 2 -d {node} 2>&1 || true"):
        assert time.monotonic() < deadline, f"{node} does not answer {timeout} s after a restart"
        time.sleep(1)


REDIS = ("import os, sys, redis; r = redis.Redis.from_url(os.environ['CELERY_BROKER_URL']); "
         "print(r.execute_command(*sys.argv[1:]))")


def redis(lab, *command: str) -> str:
    args = " ".join(shlex.quote(c) for c in command)
    return as_service_user(lab, "cpu-small",
                           f"{VENV}/python -c {shlex.quote(REDIS)} {args}").strip()


def lab_inventory_with(tmp_path, overrides: dict) -> str:
    """An inventory of the test lab with host data overridden: {host: {key: value}}."""
    path = tmp_path / "inventory_with_overrides.py"
    path.write_text(inventory_text(by_host=overrides))
    return str(path)


COLLECT = r"""
import json, sys
from celery.result import AsyncResult
from fleet_worker.app import app
ids = json.load(sys.stdin)
print(json.dumps([AsyncResult(i, app=app).get(timeout=TIMEOUT) for i in ids]))
"""


def collect(lab, ids: list[str], timeout: int) -> list:
    """The results of these tasks, waiting up to timeout for each."""
    script = COLLECT.replace("TIMEOUT", str(timeout))
    out = as_service_user(lab, "cpu-small", f"{VENV}/python -c {shlex.quote(script)}",
                          timeout=timeout + 120, stdin=json.dumps(ids))
    return json.loads(out.strip().splitlines()[-1])
