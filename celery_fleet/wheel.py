"""Wheels built once on the controller for the hosts: the worker application (and a server
package given as a directory), cached by a hash of the source; llama-cpp-python, compiled from
its source package, cached by requirement and build flags (a build takes minutes).

A deploy with unchanged sources uploads nothing and reinstalls nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from packaging.requirements import Requirement
from pyinfra.api.exceptions import PyinfraError

BUILD_DIR = Path(".fleet-build")
IGNORED_PARTS = {"__pycache__", ".git", "build", "dist", ".venv"}
# pyinfra prepares hosts in parallel (gevent patches threading): one build at a time, or two
# `pip wheel` runs collide in the source's build/ directory
_BUILDING = threading.Lock()
# what compiling llama-cpp-python takes on the controller (its CMake build of llama.cpp)
COMPILE_TOOLS = ("g++", "cmake")


class BuildError(PyinfraError):
    """A wheel could not be built on the controller (pyinfra shows its message, no trace)."""


def source_digest(source: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_file() and not IGNORED_PARTS & set(relative.parts) \
                and ".egg-info" not in str(relative):
            digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_wheel(source: Path, build_dir: Path = BUILD_DIR, cmake_args: str = "") -> Path:
    """The wheel of the project at source (built if not built yet for this exact source and
    these CMake arguments: a llama-cpp-python checkout gets the portable flags too)."""
    # with build isolation: the project's own build backend (hatchling, poetry-core,
    # setuptools ...) is fetched as its pyproject.toml says, as pip does for anyone
    return _built_once(source_wheel_dir(source, cmake_args, build_dir), [str(source.resolve())],
                       f"building {source}",
                       env=dict(os.environ, CMAKE_ARGS=cmake_args) if cmake_args else None)


def source_wheel_dir(source: Path, cmake_args: str = "", build_dir: Path = BUILD_DIR) -> Path:
    """Where the wheel of the project at source built with these CMake arguments is cached."""
    key = source_digest(source)
    if cmake_args:
        key += "-" + hashlib.sha256(cmake_args.encode()).hexdigest()[:8]
    return build_dir / key


def requirement_wheel_dir(requirement: str, cmake_args: str, build_dir: Path) -> Path:
    """Where the wheel of this requirement built with these CMake arguments is cached."""
    return build_dir / hashlib.sha256(f"{requirement}\0{cmake_args}".encode()).hexdigest()[:16]


def missing_compile_tools(wheel_dir: Path) -> list[str]:
    """The tools a compiled build lacks on this controller; none where its wheel is cached
    already in wheel_dir (source_wheel_dir, requirement_wheel_dir)."""
    if any(wheel_dir.glob("*.whl")):
        return []
    return [tool for tool in COMPILE_TOOLS if shutil.which(tool) is None]


def build_requirement_wheel(requirement: str, cmake_args: str, build_dir: Path) -> Path:
    """The wheel of a pip requirement built from its source package with these CMake
    arguments (llama-cpp-python: roles/llm_server.py), built once for each pair."""
    # from source: this package only (its build tools come as wheels, as pip fetches them)
    name = Requirement(requirement).name
    return _built_once(requirement_wheel_dir(requirement, cmake_args, build_dir),
                       ["--no-binary", name, "--no-cache-dir", requirement],
                       f"building {requirement} (CMAKE_ARGS={cmake_args})",
                       env=dict(os.environ, CMAKE_ARGS=cmake_args))


@contextmanager
def _locked_directory(path: Path):
    """Holds a POSIX record lock on path/.lock. Not flock(): under pyinfra's gevent, a
    flock taken before a subprocess ran stayed held after its file was closed (measured:
    the next build in the same process waited for itself for ever); a record lock belongs
    to the process, is never inherited by a child and goes with the process."""
    with open(path / ".lock", "a") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX)
        yield


def _built_once(out: Path, pip_args: list[str], what: str, env: dict | None = None) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    # one build at a time in this process (_BUILDING) and across processes (a lock on the
    # cache directory: two deploys at once, such as both Debian releases' test labs, build
    # it once and the second takes the first's wheel)
    with _BUILDING, _locked_directory(out.parent):
        wheels = sorted(out.glob("*.whl"))
        if wheels:
            return wheels[0]
        staging = Path(tempfile.mkdtemp(prefix=".building-", dir=out.parent))
        try:
            result = subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w",
                 str(staging), *pip_args], capture_output=True, text=True, env=env)
            built = sorted(staging.glob("*.whl"))
            if result.returncode != 0 or len(built) != 1:
                raise BuildError(f"{what} failed on this controller, no host was changed: "
                                 f"{result.stderr.strip()[-800:]}")
            if not out.exists():
                staging.rename(out)  # whole, or not at all: another process may race us
            return sorted(out.glob("*.whl"))[0]
        finally:
            shutil.rmtree(staging, ignore_errors=True)
