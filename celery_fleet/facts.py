"""pyinfra facts of celery-fleet (shape of pyinfra's own: a shell command, a pure process)."""

from __future__ import annotations

from pyinfra.api import FactBase

from .gpu import GPU_FACT_COMMAND, parse_gpu_fact


class NvidiaGpus(FactBase):
    """NVIDIA GPUs of the host from nvidia-smi: {"status", "gpus": [{index, uuid, name,
    vram_mb}], "problem"}. Status absent (no nvidia-smi), none, ok or error (driver broken)."""

    def command(self) -> str:
        return GPU_FACT_COMMAND

    def process(self, output) -> dict:
        return parse_gpu_fact(list(output))
