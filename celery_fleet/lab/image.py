"""The lab's host image: a Debian root filesystem (bookworm or trixie) that boots systemd under
nspawn.

Built once with debootstrap (~1 minute), kept as a zstd tarball and as an unpacked directory
that every host mounts read-only as the lower layer of its overlay. The cache key is a hash of
the recipe, so changing the package list or the customisation builds a new image instead of
reusing a stale one.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .system import LabError, run

# The Debian releases celery-fleet supports (README): 12 and 13. The lab builds either; its
# hosts' apt sources name that release (the archive and apt settings stay this machine's).
SUITES = ("bookworm", "trixie")
DEFAULT_SUITE = "bookworm"
# What a bare-metal Debian host has before we touch it, plus sshd, sudo and python3 (pyinfra
# needs a POSIX shell; python3 lets the fake nvidia-smi and the deploy's checks run).
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "libpam-systemd", "openssh-server", "python3", "sudo",
    "iproute2", "ca-certificates", "procps",
)
# Bump when customise() changes: the cache key then changes and the image is rebuilt.
RECIPE_VERSION = 1
APT_SOURCES = "/etc/apt/sources.list.d/debian.sources"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEPLOY_USER = "deploy"


def machine_mirror() -> str:
    """The Debian mirror this machine's apt uses: the hosts use the same one."""
    try:
        for line in Path(APT_SOURCES).read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    except FileNotFoundError:
        pass
    return DEFAULT_MIRROR


@dataclass(frozen=True)
class Image:
    cache_dir: Path
    mirror: str
    suite: str = DEFAULT_SUITE

    @property
    def key(self) -> str:
        recipe = json.dumps([self.suite, PACKAGES, RECIPE_VERSION, self.mirror])
        return hashlib.sha256(recipe.encode()).hexdigest()[:12]

    @property
    def rootfs(self) -> Path:
        return self.cache_dir / f"rootfs-{self.key}"

    @property
    def tarball(self) -> Path:
        return self.cache_dir / f"rootfs-{self.key}.tar.zst"

    def ensure(self, say) -> str:
        """Make the unpacked rootfs exist; returns how: 'cached', 'restored' or 'built'."""
        if (self.rootfs / "lib/systemd/systemd").exists():
            return "cached"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # two labs of one release coming up at once (the tests' labs, two `fleet lab up`):
        # the second waits for the first's image instead of building its own and replacing
        # the rootfs under the first's hosts
        with open(self.cache_dir / f".rootfs-{self.key}.lock", "a") as lock:
            fcntl.lockf(lock, fcntl.LOCK_EX)  # a record lock: see wheel._locked_directory
            if (self.rootfs / "lib/systemd/systemd").exists():
                return "cached"
            return self._unpack_or_build(say)

    def _unpack_or_build(self, say) -> str:
        staging = self.cache_dir / f".staging-{self.key}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            if self.tarball.exists():
                run(["tar", "-C", str(staging), "--zstd", "-xpf", str(self.tarball),
                     "--numeric-owner"], timeout=300)
                how = "restored"
            else:
                self._build(staging, say)
                how = "built"
            shutil.rmtree(self.rootfs, ignore_errors=True)
            staging.rename(self.rootfs)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return how

    def _build(self, rootfs: Path, say) -> None:
        started = time.monotonic()
        say(f"building the host image (debootstrap {self.suite}, about a minute) into "
            f"{self.cache_dir}")
        # each release its own: both releases' images may be built at once (make test)
        debs = self.cache_dir / f"debs-{self.suite}"
        debs.mkdir(exist_ok=True)
        log = self.cache_dir / f"debootstrap-{self.suite}.log"
        returncode, lines = run_streaming(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
             f"--cache-dir={debs}", self.suite, str(rootfs), self.mirror],
            DebootstrapProgress(say).line, timeout_s=900)
        log.write_text("\n".join(lines) + "\n")
        if returncode != 0:
            tail = "\n".join(lines[-15:])
            raise LabError(f"debootstrap failed (exit {returncode}, log {log}):\n{tail}")
        say(f"debootstrap done in {time.monotonic() - started:.0f} s")
        customise(rootfs, self.suite)
        partial = self.tarball.with_suffix(".partial")
        run(["tar", "-C", str(rootfs), "--zstd", "-cpf", str(partial), "--numeric-owner", "."],
            timeout=300)
        partial.rename(self.tarball)
        size_mb = self.tarball.stat().st_size / 2**20
        say(f"image built in {time.monotonic() - started:.0f} s; cached as {self.tarball} "
            f"({size_mb:.0f} MB)")


class DebootstrapProgress:
    """debootstrap prints a line per package ("I: Retrieving libc6 2.36"): say each new stage
    (Retrieving, Validating, Extracting, Installing, Unpacking, Configuring ...) and, within a
    long stage, its latest line every heartbeat, so a minute of building is not a minute of
    silence."""

    def __init__(self, say, heartbeat_s: float = 10, clock=time.monotonic):
        self.say, self.heartbeat_s, self.clock = say, heartbeat_s, clock
        self.started = self.last = clock()
        self.stage = ""

    def line(self, text: str) -> None:
        if not text.startswith("I: "):
            return
        stage, now = " ".join(text.split()[:2]), self.clock()
        if stage != self.stage or now - self.last >= self.heartbeat_s:
            self.say(f"debootstrap, {now - self.started:.0f} s: {text[3:].strip()}")
            self.stage, self.last = stage, now


def run_streaming(args: list[str], on_line, timeout_s: float) -> tuple[int, list[str]]:
    """Run a command, handing each line of its output (stdout and stderr) to on_line as it
    comes; (exit status, every line)."""
    try:
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, errors="replace")
    except FileNotFoundError as error:
        raise LabError(f"{args[0]} is not installed: {error}") from error
    deadline, lines = time.monotonic() + timeout_s, []
    for text in process.stdout:
        lines.append(text.rstrip("\n"))
        on_line(lines[-1])
        if time.monotonic() > deadline:
            process.kill()
            lines.append(f"(killed after {timeout_s:.0f} s)")
            break
    return process.wait(), lines


def sources_for(suite: str, machine_sources: str, machine_suite: str) -> str:
    """This machine's deb822 apt sources with its release replaced by the image's on the
    Suites: lines (bookworm, bookworm-updates, bookworm-security -> trixie, ...): the same
    archive, the host's own release. A trixie host with bookworm's sources installs bookworm's
    Redis and Python packages onto trixie, or fails on their dependencies."""
    def retarget(line: str) -> str:
        if not line.startswith("Suites:"):
            return line
        return re.sub(rf"(?<![\w-]){re.escape(machine_suite)}(?=[-\s]|$)", suite, line)

    return "".join(retarget(line) for line in machine_sources.splitlines(keepends=True))


def machine_suite() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return DEFAULT_SUITE


def customise(rootfs: Path, suite: str = DEFAULT_SUITE) -> None:
    """Make the fresh rootfs a generic host; everything per host happens later, in its overlay."""
    # the same archive and apt settings as this machine, for the image's release
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    if os.path.exists(APT_SOURCES):
        (rootfs / "etc/apt/sources.list.d" / os.path.basename(APT_SOURCES)).write_text(
            sources_for(suite, Path(APT_SOURCES).read_text(), machine_suite()))
    for snippet in glob.glob("/etc/apt/apt.conf.d/*"):
        target = rootfs / "etc/apt/apt.conf.d" / os.path.basename(snippet)
        if os.path.isfile(snippet) and not target.exists():
            shutil.copy(snippet, target)
    # no background apt run may grab the dpkg lock in the middle of a deploy or a test
    run(["chroot", str(rootfs), "systemctl", "mask", "apt-daily.timer",
         "apt-daily-upgrade.timer"], check=False)
    # a per-host identity is made when the host is created
    for key in glob.glob(str(rootfs / "etc/ssh/ssh_host_*")):
        os.unlink(key)
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (rootfs / "etc/hostname").unlink(missing_ok=True)
    # the account a typical bare-metal host gives its operators: a user with passwordless sudo
    run(["chroot", str(rootfs), "useradd", "-m", "-s", "/bin/bash", "-G", "sudo", DEPLOY_USER])
    sudoers = rootfs / "etc/sudoers.d" / DEPLOY_USER
    sudoers.write_text(f"{DEPLOY_USER} ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)
    run(["chroot", str(rootfs), "apt-get", "clean"], check=False)
    shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)
    for log in glob.glob(str(rootfs / "var/log/*.log")):
        os.unlink(log)
