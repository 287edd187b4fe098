"""pyinfra facts of celery-fleet (shape of pyinfra's own: a shell command, a pure process)."""

from __future__ import annotations

from pyinfra.api import FactBase

from . import model_file
from .gpu import GPU_FACT_COMMAND, parse_gpu_fact
from .layout import LLM_SERVER_PREFIX, UNIT_DIR, WORKER_UNIT_GLOB
from .redis_state import REDIS_STATE_COMMAND, parse_redis_state


class NvidiaGpus(FactBase):
    """NVIDIA GPUs of the host from nvidia-smi: {"status", "gpus": [{index, uuid, name,
    vram_mb}], "problem"}. Status absent (no nvidia-smi), none, ok or error (driver broken)."""

    def command(self) -> str:
        return GPU_FACT_COMMAND

    def process(self, output) -> dict:
        return parse_gpu_fact(list(output))


# Fleet worker and inference server units of a host: loaded ones, and enabled ones that may
# be stopped.
WORKER_UNITS_COMMAND = (
    f"systemctl list-units --all --plain --no-legend '{WORKER_UNIT_GLOB}' "
    f"'{LLM_SERVER_PREFIX}*.service' 2>/dev/null | awk '{{print $1}}'; "
    f"ls {UNIT_DIR}/multi-user.target.wants/ 2>/dev/null "
    f"| grep -e '^celery-.*-worker@' -e '^{LLM_SERVER_PREFIX}' || true"
)


def parse_worker_units(lines) -> list[str]:
    units = {line.strip() for line in lines if line.strip().startswith("celery-")}
    return sorted(u for u in units if u.endswith(".service") and "@" in u and "@." not in u)


class WorkerUnits(FactBase):
    """Instances of celery-fleet's worker and inference server units on the host (running,
    stopped or enabled)."""

    def command(self) -> str:
        return WORKER_UNITS_COMMAND

    def default(self) -> list[str]:  # no output at all: no units
        return []

    def process(self, output) -> list[str]:
        return parse_worker_units(output)


class RedisState(FactBase):
    """The Redis this host runs before the deploy: installed, running, AOF on in its
    configuration, size of its RDB snapshot (celery_fleet/redis_state.py)."""

    def command(self) -> str:
        return REDIS_STATE_COMMAND

    def process(self, output) -> dict:
        return parse_redis_state(list(output))


class CpuArch(FactBase):
    """(uname -m, the CPU's flags from /proc/cpuinfo): can the llama.cpp build run here?"""

    def command(self) -> str:
        return "uname -m; grep -m1 '^flags' /proc/cpuinfo || true"

    def process(self, output) -> tuple[str, tuple[str, ...]]:
        lines = list(output)
        flags = lines[1].split(":", 1)[-1].split() if len(lines) > 1 else []
        return (lines[0].strip() if lines else "", tuple(flags))


class ModelOnHost(FactBase):
    """A model already on the host (llm_model_host_path): (MB rounded up, format) with format
    as model_file names them (gguf, directory, other), or "unreadable"; None where nothing is
    there."""

    def command(self, path: str) -> str:
        quoted = "'" + path.replace("'", "'\\''") + "'"
        # -L: a model reached through a link (current -> v2, Hugging Face snapshots) is
        # sized and read through it; od: the first four bytes (GGUF) as hex, never raw bytes
        return (f"test -e {quoted} || exit 0; du -sL --block-size=1M --apparent-size {quoted}"
                f" | cut -f1; if test -d {quoted}; then echo {model_file.DIRECTORY}; "
                f"else od -An -tx1 -N4 {quoted} 2>/dev/null | tr -d ' ' || true; "
                f"test -r {quoted} || echo unreadable; fi")

    def process(self, output) -> tuple[int, str] | None:
        lines = [line.strip() for line in output if line.strip()]
        if not lines:
            return None
        kind = lines[-1] if len(lines) > 1 else ""
        if kind not in (model_file.DIRECTORY, "unreadable"):
            kind = model_file.GGUF if kind == model_file.GGUF_MAGIC.hex() else model_file.OTHER
        return int(lines[0]), kind
