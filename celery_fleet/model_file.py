"""The model file on the controller (llm_model_path): its size, its sha256, whether it is a
GGUF file. The shell's side of the inference server's plan (celery_fleet/inference.py)."""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from pathlib import Path

GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file (ggml's gguf.h)


def size_mb(path: str) -> int | None:
    """MB (rounded up) of a file, or of every file under a directory; None if absent."""
    p = Path(path)
    if p.is_file():
        total = p.stat().st_size
    elif p.is_dir():
        total = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    else:
        return None
    return max(1, math.ceil(total / 2**20))


def is_gguf(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC


def sha256_of(path: str) -> str:
    """Hashed once a run for each (path, size, mtime): a model of GBs takes seconds."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()
