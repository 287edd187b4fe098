"""Thin wrappers over the machine's commands, and the checks that decide whether a lab can run."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

# command -> Debian package providing it; the lab installs what is missing (issue #2)
HOST_TOOLS = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "nft": "nftables",
    "zstd": "zstd",
    "ip": "iproute2",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "nsenter": "util-linux",
}


# inotify instances every root process on this machine may hold together, the lab's hosts
# included (no user namespace: each host's systemd, journald, logind and user managers count
# against the machine's root). The kernel's default, 128, ran out with 4 labs (18 hosts) up at
# once: a host's systemd failed "to create control group inotify object: Too many open files"
# (make test, found on the parallel run); 8192 is what container hosts commonly set.
INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
LAB_INOTIFY_INSTANCES = 8192


class LabError(RuntimeError):
    """Something the lab cannot do; the message says what and what to do about it."""


class LabUnavailable(LabError):
    """This machine cannot run a lab at all (no root, no nspawn, no overlayfs)."""


def run(args: list[str], *, check: bool = True, input: str | None = None,
        timeout: float | None = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(args, input=input, capture_output=True, text=True,
                                timeout=timeout, env=env)
    except FileNotFoundError as error:
        raise LabError(f"{args[0]} is not installed: {error}") from error
    if check and result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise LabError(f"`{' '.join(args)}` failed (exit {result.returncode}): {output}")
    return result


def missing_host_tools() -> list[str]:
    return sorted({pkg for cmd, pkg in HOST_TOOLS.items() if shutil.which(cmd) is None})


def ensure_host_tools(say) -> None:
    """Install the lab's own tools (systemd-container, debootstrap, nftables, zstd) if missing."""
    missing = missing_host_tools()
    if not missing:
        return
    say(f"installing host tools: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], timeout=600, env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        timeout=900, env=env)
    still = missing_host_tools()
    if still:
        raise LabUnavailable(f"installed {' '.join(missing)} but still missing: {' '.join(still)}")


def why_unavailable() -> str | None:
    """None when this machine can run a lab, else the reason in one sentence."""
    if os.name != "posix" or not os.path.exists("/proc/self/ns/net"):
        return "the lab needs Linux with network namespaces"
    if os.geteuid() != 0:
        return ("the lab needs root (it mounts overlays, creates network namespaces and boots "
                "containers): run it with sudo")
    with open("/proc/filesystems") as handle:
        if "overlay" not in handle.read():
            return "the kernel has no overlay filesystem (modprobe overlay)"
    if shutil.which("systemd-nspawn") is None and shutil.which("apt-get") is None:
        return "systemd-nspawn is missing and there is no apt-get to install systemd-container"
    return None


def process_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
    except (FileNotFoundError, ProcessLookupError):
        return []


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def is_mountpoint(path: str) -> bool:
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as handle:
        return any(line.split()[4] == path for line in handle)


def mounts_under(path: str) -> list[str]:
    """Mount points at or below path, deepest first (the order to unmount them)."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    inside = [p for p in points if p == path or p.startswith(path + "/")]
    return sorted(set(inside), key=len, reverse=True)


def raise_machine_setting(setting: Path, at_least: int, saved: Path) -> None:
    """A machine setting (a /proc/sys file) raised to at_least for the labs; the machine's own
    value remembered once, across instances, to put back when the last lab goes."""
    current = int(setting.read_text().split()[0])
    if not saved.exists():
        saved.write_text(f"{current}\n")
    if current < at_least:
        setting.write_text(f"{at_least}\n")


def restore_machine_setting(setting: Path, saved: Path) -> None:
    if saved.exists():
        setting.write_text(saved.read_text())
        saved.unlink()
