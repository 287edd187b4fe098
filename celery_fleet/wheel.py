"""The worker application, built once on the controller into a wheel the hosts install.

Cached by a hash of the source, so a deploy with unchanged source uploads nothing and
reinstalls nothing.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

BUILD_DIR = Path(".fleet-build")
IGNORED_PARTS = {"__pycache__", ".git", "build", "dist", ".venv"}
# pyinfra prepares hosts in parallel (gevent patches threading): one build at a time, or two
# `pip wheel` runs collide in the source's build/ directory
_BUILDING = threading.Lock()


def source_digest(source: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_file() and not IGNORED_PARTS & set(relative.parts) \
                and ".egg-info" not in str(relative):
            digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_wheel(source: Path, build_dir: Path = BUILD_DIR) -> Path:
    """The wheel of the project at source (built if not built yet for this exact source)."""
    out = build_dir / source_digest(source)
    with _BUILDING:
        wheels = sorted(out.glob("*.whl"))
        if wheels:
            return wheels[0]
        build_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".building-", dir=build_dir))
        try:
            # with build isolation: the project's own build backend (hatchling, poetry-core,
            # setuptools ...) is fetched as its pyproject.toml says, as pip does for anyone
            result = subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w",
                 str(staging), str(source.resolve())],
                capture_output=True, text=True)
            built = sorted(staging.glob("*.whl"))
            if result.returncode != 0 or len(built) != 1:
                raise RuntimeError(f"building the worker application at {source} failed: "
                                   f"{result.stderr.strip()[-800:]}")
            if not out.exists():
                staging.rename(out)  # whole, or not at all: another process may race us
            return sorted(out.glob("*.whl"))[0]
        finally:
            shutil.rmtree(staging, ignore_errors=True)
