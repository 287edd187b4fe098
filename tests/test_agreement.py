"""Facts the controller and the worker application must agree on, where they cannot share
code (the worker package is installed on the hosts, celery_fleet is not): each is defined
once on each side, and checked equal here. Also: the pure layers import no pyinfra."""

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from fleet_worker import config, memory

from celery_fleet import layout, sizing
from celery_fleet.settings import DEFAULTS, EMBEDDING_POOLS, LLM_CPU_POOLS, LLM_GPU_POOLS

ROOT = Path(__file__).resolve().parents[1]
# what the LLM instance .env sets for the inference libraries, not for the application
# read by libraries, Python and Celery themselves (CELERY_CONFIG_MODULE: Celery's loader)
LIBRARY_VARIABLES = {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                     "CUDA_VISIBLE_DEVICES", "CELERY_CONFIG_MODULE", "PYTHONPATH"}


def test_the_unit_restarts_on_the_exit_code_the_memory_watch_uses():
    assert layout.EXIT_RECYCLE == memory.EXIT_RECYCLE


def test_the_worker_falls_back_to_the_deploys_visibility_margin():
    assert config.VISIBILITY_MARGIN_S == sizing.VISIBILITY_MARGIN_S


def test_the_workers_default_time_limit_is_the_deploys():
    assert config.DEFAULT_TASK_TIME_LIMIT_S == DEFAULTS["llm_task_time_limit_s"]


def test_the_units_consume_the_queues_the_application_routes_to():
    assert (layout.EMBEDDING_QUEUE, layout.LLM_QUEUE) == (config.EMBEDDING_QUEUE,
                                                          config.LLM_QUEUE)


def test_the_reference_app_pins_what_every_worker_venv_gets():
    pins = tomllib.loads((ROOT / "worker" / "pyproject.toml").read_text())["project"][
        "dependencies"]
    for requirement in layout.WORKER_BASE_REQUIREMENTS:
        assert requirement in pins
    assert f"celery=={layout.CELERY_VERSION}" in layout.FLOWER_REQUIREMENTS


def test_every_pool_the_settings_accept_is_one_celery_reports():
    assert set(layout.POOL_IMPLEMENTATIONS.values()) == set(
        EMBEDDING_POOLS + LLM_CPU_POOLS + LLM_GPU_POOLS)


def test_the_roles_the_env_files_name_are_the_deploys_roles():
    from celery_fleet.render import embedding_env, llm_env

    from hosts import planned_host

    h = planned_host(roles=("embedding", "llm"))
    written = {json.loads(embedding_env(h)["role"]), json.loads(llm_env(h)["role"])}
    assert written == set(layout.GROUP_ROLES.values()) - {"broker", "client"}


def test_every_variable_the_env_files_set_is_read_by_the_worker():
    read = set(re.findall(r'env\.get\("(\w+)"', (ROOT / "worker" / "fleet_worker" /
                                                   "config.py").read_text()))
    for template in ("embedding-worker.env.j2", "llm-worker.env.j2", "llm-worker@.env.j2"):
        text = (layout.TEMPLATES_DIR / template).read_text()
        written = set(re.findall(r"^(?:{%.*?%})?([A-Z][A-Z0-9_]*)=", text, flags=re.M))
        assert written, template
        assert written - LIBRARY_VARIABLES <= read, (template, written - read)


def test_the_pure_layers_import_no_pyinfra():
    code = ("import sys; import celery_fleet.render, celery_fleet.status, celery_fleet.checks, "
            "celery_fleet.layout, celery_fleet.fleetplan, celery_fleet.planview, "
            "celery_fleet.sizing, celery_fleet.settings; "
            "print([m for m in sys.modules if m.split('.')[0] in ('pyinfra', 'pyinfra_cli')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.strip()
    assert out == "[]"


def test_the_bench_starts_workers_with_variables_the_worker_reads(monkeypatch):
    from celery_fleet.bench.harness import worker_env

    for key in list(os.environ):  # CI sets FLEET_LAB_REQUIRED: not the bench's
        if key.startswith(("FLEET_", "EMBEDDING_", "LLM_", "CELERY_")):
            monkeypatch.delenv(key)
    read = set(re.findall(r'env\.get\("(\w+)"', (ROOT / "worker" / "fleet_worker" /
                                                   "config.py").read_text()))
    ours = {k for k in worker_env("redis://x", "http://api/v1", "llm", "prefork", 1)
            if k.startswith(("FLEET_", "EMBEDDING_", "LLM_", "CELERY_"))}
    assert ours and ours <= read, ours - read


def test_importing_the_roles_patches_nothing():
    """pyinfra_cli monkey-patches threading for gevent on import; roles and the pure layers
    must not bring it in, or threads in the same process (the wheel build's lock) deadlock."""
    code = ("import gevent.monkey, roles.host, celery_fleet.status_probe, celery_fleet.cli; "
            "print(gevent.monkey.is_module_patched('threading'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.strip()
    assert out == "False"
