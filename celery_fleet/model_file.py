"""The model file on the controller (llm_model_path): its size, its format, its KV cache per
token (from its GGUF header) and its sha256. The shell's side of the inference server's plan
(celery_fleet/inference.py), which refuses what does not fit."""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path
from typing import BinaryIO

GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file (ggml's gguf.h)
# a model's format, as the plan names it (the host's fact, facts.ModelOnHost, says the same);
# "" where nobody looked (fleet plan without an inventory)
GGUF, DIRECTORY, OTHER, ABSENT, UNREADABLE = "gguf", "directory", "other", "absent", "unreadable"
# a GGUF string longer than this is a broken header, not a model's metadata
GGUF_STRING_MAX = 2**24
# arrays of scalars up to this length are kept (per-layer values); longer ones are skipped
GGUF_ARRAY_KEPT = 4096
# llama.cpp's KV cache holds F16 keys and values (--cache-type-k/-v default f16): 2 bytes
KV_CACHE_BYTES_PER_VALUE = 2

# GGUF metadata value types (ggml's gguf.h, enum gguf_type): struct format of the scalars
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def controller_facts(path: str, digest_cache: Path | None) -> dict:
    """HostFacts' model fields for a model file on this controller (llm_model_path)."""
    try:
        found = describe(path)
        if found is None:
            return {"llm_model_format": ABSENT}
        size, kind, kv = found
        digest = sha256_of(path, digest_cache) if kind == GGUF else ""
    except OSError:  # PermissionError and its kind: the plan says so, naming the path
        return {"llm_model_format": UNREADABLE}
    return {"llm_model_mb": size, "llm_model_format": kind,
            "llm_model_kv_bytes_per_token": kv, "llm_model_sha256": digest}


def describe(path: str) -> tuple[int, str, int | None] | None:
    """(MB rounded up, format, KV cache bytes per token or None) of a model file or directory;
    None where nothing is there. Raises OSError where it cannot be read."""
    p = Path(path)
    if p.is_dir():
        total = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        return max(1, math.ceil(total / 2**20)), DIRECTORY, None
    if not p.is_file():
        return None
    with open(p, "rb") as f:
        is_gguf = f.read(4) == GGUF_MAGIC
        try:
            kv = kv_bytes_per_token(read_gguf_metadata(f)) if is_gguf else None
        # a header llama.cpp would refuse too (its log says why): sizes that do not parse, are
        # zero or are not numbers leave the KV cache to llm_kv_cache_per_task_mb
        except (ValueError, struct.error, ArithmeticError, TypeError, OSError):
            kv = None
    return max(1, math.ceil(p.stat().st_size / 2**20)), GGUF if is_gguf else OTHER, kv


def read_gguf_metadata(f: BinaryIO) -> dict:
    """The key/value metadata of a GGUF file (version 2 or 3), f just past its magic. Arrays
    (the tokenizer's vocabulary) are skipped: the sizes are scalars."""
    version, _tensors, count = struct.unpack("<IQQ", f.read(20))
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} (2 or 3 are read)")
    metadata = {}
    for _ in range(count):
        key = _string(f)
        kind = struct.unpack("<I", f.read(4))[0]
        metadata[key] = _value(f, kind)
    return metadata


def _string(f: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", f.read(8))
    if length > GGUF_STRING_MAX:
        raise ValueError(f"a GGUF string of {length} bytes")
    return f.read(length).decode("utf-8", errors="replace")


def _value(f: BinaryIO, kind: int):
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        item, count = struct.unpack("<IQ", f.read(12))
        if item in _SCALARS and count > GGUF_ARRAY_KEPT:  # skipped: a broken count only
            f.seek(count * struct.calcsize(_SCALARS[item]), os.SEEK_CUR)  # seeks past the end
            return None
        if item in _SCALARS:  # per-layer values (head_count_kv of some models) are kept
            fmt = "<" + _SCALARS[item][1] * count
            return list(struct.unpack(fmt, f.read(struct.calcsize(fmt))))
        for _ in range(count):
            _value(f, item)
        return None
    raise ValueError(f"unknown GGUF value type {kind}")


def kv_bytes_per_token(metadata: dict) -> int | None:
    """Bytes of KV cache one token of context takes in llama.cpp: for every layer, its KV heads
    x (key length + value length) x 2 bytes (llama.cpp's llama_kv_cache: n_embd_k_gqa +
    n_embd_v_gqa per layer, F16). None where the header lacks the sizes (an architecture
    without attention heads, such as Mamba: the plan then uses llm_kv_cache_per_task_mb)."""
    arch = metadata.get("general.architecture")
    layers = metadata.get(f"{arch}.block_count")
    heads = metadata.get(f"{arch}.attention.head_count")
    embedding = metadata.get(f"{arch}.embedding_length")
    if not isinstance(layers, int) or not heads or not isinstance(embedding, int):
        return None
    kv_heads = metadata.get(f"{arch}.attention.head_count_kv", heads)
    per_layer = kv_heads if isinstance(kv_heads, list) else [kv_heads] * layers
    head_count = max(heads) if isinstance(heads, list) else heads
    if not isinstance(head_count, int) or head_count <= 0:  # a broken header: no division
        return None
    key = metadata.get(f"{arch}.attention.key_length", embedding // head_count)
    value = metadata.get(f"{arch}.attention.value_length", embedding // head_count)
    return sum(n * (key + value) for n in per_layer[:layers]) * KV_CACHE_BYTES_PER_VALUE


def sha256_of(path: str, cache_dir: Path | None = None) -> str:
    """Hashed once for each (path, size, mtime): a model of GBs takes seconds to hash, and
    every deploy and `fleet plan` needs its digest. Kept in cache_dir (the controller's
    cache) between runs."""
    p = Path(path).resolve()
    stat = p.stat()
    key = hashlib.sha256(f"{p}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    cached = cache_dir / f"{key}.json" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        return json.loads(cached.read_text())["sha256"]
    digest = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}")
        partial.write_text(json.dumps({"path": str(p), "sha256": digest.hexdigest()}))
        partial.replace(cached)
    return digest.hexdigest()
