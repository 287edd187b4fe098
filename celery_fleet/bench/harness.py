"""Real processes on this machine for the benchmark and the integration tests: a private
redis-server, the fake OpenAI backend, and `celery worker` processes of the reference app.

Each is a context manager that starts its process on a free loopback port and stops exactly
that process (by the PID it started) on the way out.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import psutil

from ..render import LLM_PREFETCH_MULTIPLIER
from ..sizing import EMBEDDING_PREFETCH_MULTIPLIER

PROJECT_DIR = Path(__file__).resolve().parents[2]
FAKE_SERVER = PROJECT_DIR / "files" / "fake_openai_server.py"
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, process: subprocess.Popen, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


def _stop(process: subprocess.Popen, timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def local_redis():
    """A private redis-server on a free loopback port; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fleet-redis-") as directory:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory, "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_port(port, process, "redis-server")
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            _stop(process)


@contextmanager
def fake_backend(**options):
    """The fake OpenAI-compatible API; options are its command-line flags (latency_ms=200)."""
    port = free_port()
    args = [sys.executable, str(FAKE_SERVER), "--port", str(port)]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, process, "the fake OpenAI backend")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        _stop(process)


def backend_call(api_url: str, path: str, payload: dict | None = None) -> dict:
    base = api_url.rsplit("/v1", 1)[0]
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(base + path, data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def worker_env(broker_url: str, api_url: str, role: str, pool: str, concurrency: int,
               **extra) -> dict:
    env = dict(os.environ, CELERY_BROKER_URL=broker_url, FLEET_ROLE=role, FLEET_POOL=pool,
               FLEET_CONCURRENCY=str(concurrency), EMBEDDING_API_URL=api_url,
               LLM_API_URL=api_url, EMBEDDING_MODEL="fake", LLM_MODEL="fake",
               FLEET_PREFETCH_MULTIPLIER=str(EMBEDDING_PREFETCH_MULTIPLIER if role == "embedding"
                                             else LLM_PREFETCH_MULTIPLIER))
    env.update({key: str(value) for key, value in extra.items()})
    return env


@contextmanager
def celery_worker(env: dict, queue: str, pool: str, concurrency: int, name: str = "bench",
                  nice: int = 0):
    """A real `celery worker` of the reference app (at that niceness: `nice` runs it in the same
    process); waits until it consumes."""
    args = ["nice", "-n", str(nice)] if nice else []
    args += [str(VENV_BIN / "celery"), "-A", "fleet_worker.app", "worker", f"--pool={pool}",
            f"--concurrency={concurrency}", f"--queues={queue}", f"--hostname={name}@%h",
            "--loglevel=WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        _stop(process, timeout=60)


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (prefork pools fork children)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in processes if p.is_running()) / 2**20
    except psutil.NoSuchProcess:
        return 0.0
