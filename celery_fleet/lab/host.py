"""One lab host: its copy-on-write root, its simulated hardware, its cgroups and its nspawn.

A host is an overlay (lower = the shared image, upper on the lab's tmpfs) booted with
`systemd-nspawn --boot` inside its own network namespace. Its processes live in cgroups the
lab creates for it, which is how `down` finds exactly the processes the lab started.
"""

from __future__ import annotations

import json
import os
import hashlib
import secrets
import signal
import subprocess
from importlib import resources
from pathlib import Path

from .spec import HostSpec, LabHost
from .system import LabError, is_mountpoint, process_cmdline, run, wait_for

CGROUP_ROOT = Path("/sys/fs/cgroup")
GUEST_CONFIG_DIR = "etc/celery-fleet-lab"  # inside the host
STOP_TIMEOUT_S = 15  # orderly poweroff takes ~1-2 s; past this the host's processes are killed


def overlay_paths(hosts_dir: Path, name: str) -> dict[str, Path]:
    base = hosts_dir / name
    return {"base": base, "upper": base / "upper", "work": base / "work",
            "merged": base / "merged", "console": base / "console.log"}


def mount_overlay(lower: Path, hosts_dir: Path, name: str) -> Path:
    paths = overlay_paths(hosts_dir, name)
    if is_mountpoint(str(paths["merged"])):
        run(["umount", str(paths["merged"])])
    run(["rm", "-rf", str(paths["base"])])
    for key in ("upper", "work", "merged"):
        paths[key].mkdir(parents=True)
    run(["mount", "-t", "overlay", f"overlay-{name}", "-o",
         f"lowerdir={lower},upperdir={paths['upper']},workdir={paths['work']}",
         str(paths["merged"])])
    return paths["merged"]


def _owner_ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise LabError(f"user {user} is missing from the image")


def write_identity(root: Path, host: LabHost, all_hosts: tuple[LabHost, ...],
                   public_key: str) -> list[str]:
    """Hostname, /etc/hosts, machine-id, fresh SSH host keys, authorized keys.

    Returns the known_hosts lines that pin this host's new keys.
    """
    (root / "etc/hostname").write_text(host.name + "\n")
    lines = ["127.0.0.1 localhost", f"127.0.1.1 {host.name}",
             "::1 localhost ip6-localhost ip6-loopback"]
    lines += [f"{other.ip} {other.name}" for other in all_hosts]
    (root / "etc/hosts").write_text("\n".join(lines) + "\n")
    (root / "etc/machine-id").write_text(secrets.token_hex(16) + "\n")
    run(["ssh-keygen", "-q", "-A", "-f", str(root)])
    known = []
    for pub in sorted((root / "etc/ssh").glob("ssh_host_*_key.pub")):
        key_type, key = pub.read_text().split()[:2]
        known.append(f"{host.ip},{host.name} {key_type} {key}")
    for user, home in (("root", "root"), ("deploy", "home/deploy")):
        uid, gid = _owner_ids(root, user)
        ssh_dir = root / home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        keys = ssh_dir / "authorized_keys"
        keys.write_text(public_key)
        keys.chmod(0o600)
        for path in (ssh_dir, keys):
            os.chown(path, uid, gid)
    return known


def fake_meminfo(real_meminfo: str, ram_mb: int) -> str:
    """/proc/meminfo as a host with ram_mb would show it (vmstat and psutil read this)."""
    total_kb = ram_mb * 1024
    replaced = {"MemTotal": total_kb, "MemFree": int(total_kb * 0.9),
                "MemAvailable": int(total_kb * 0.9)}
    out = []
    for line in real_meminfo.splitlines():
        key = line.split(":", 1)[0]
        out.append(f"{key + ':':<16}{replaced[key]:>8} kB" if key in replaced else line)
    return "\n".join(out) + "\n"


def cpu_online(cores: int) -> str:
    return "0\n" if cores == 1 else f"0-{cores - 1}\n"


def gpu_config(spec: HostSpec) -> dict:
    return {
        "mode": spec.nvidia_smi,
        "gpus": [
            {"name": f"NVIDIA Lab GPU {vram // 1024}GB", "vram_mb": vram, "used_mb": 0,
             "uuid": "GPU-%s" % _stable_uuid(f"{spec.name}-{index}")}
            for index, vram in enumerate(spec.gpu_vram_mb)
        ],
    }


def _stable_uuid(seed: str) -> str:
    h = hashlib.sha256(seed.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def write_hardware(root: Path, spec: HostSpec, machine_cores: int) -> list[str]:
    """Simulated RAM, cores and GPUs; returns the nspawn options that put them in place."""
    config_dir = root / GUEST_CONFIG_DIR
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "host.json").write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    (config_dir / "meminfo").write_text(
        fake_meminfo(Path("/proc/meminfo").read_text(), spec.ram_mb))
    (config_dir / "cpu_online").write_text(cpu_online(spec.cores))
    real_cores = min(spec.cores, machine_cores)
    options = [
        # nspawn resolves the source of a bind onto /proc inside the container ...
        f"--bind-ro=/{GUEST_CONFIG_DIR}/meminfo:/proc/meminfo",
        # ... and the source of a bind onto /sys on the machine
        f"--bind-ro={config_dir}/cpu_online:/sys/devices/system/cpu/online",
        f"--cpu-affinity={cpu_online(real_cores).strip()}",
    ]
    if spec.gpu_vram_mb or spec.nvidia_smi != "ok":
        (config_dir / "gpus.json").write_text(json.dumps(gpu_config(spec), indent=2) + "\n")
        tool = root / "usr/local/bin/nvidia-smi"
        tool.write_text(resources.files(__package__).joinpath("fake_nvidia_smi.py").read_text())
        tool.chmod(0o755)
    return options


# ---- cgroups: each host's processes in cgroups of its own --------------------------------

def _own_cgroup(controller: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") or (controller == "" and controllers == ""):
            return path
    return "/"


def cgroup_dirs(instance: str, name: str) -> list[Path]:
    leaf = f"celery-fleet-{instance}-{name}"
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # pure cgroup v2
        return [CGROUP_ROOT / _own_cgroup("").lstrip("/") / leaf]
    dirs = [CGROUP_ROOT / h / "celery-fleet" / leaf
            for h in ("systemd", "unified") if (CGROUP_ROOT / h).is_dir()]
    if (CGROUP_ROOT / "memory").is_dir():
        dirs.append(CGROUP_ROOT / "memory" / _own_cgroup("memory").lstrip("/") / leaf)
    return dirs


def create_cgroups(instance: str, name: str, ram_mb: int) -> list[Path]:
    dirs = cgroup_dirs(instance, name)
    for directory in dirs:
        for attempt in range(5):
            try:
                directory.mkdir(parents=True, exist_ok=True)
                break
            except FileNotFoundError:  # another lab's down removed the shared parent meanwhile
                if attempt == 4:
                    raise
        for limit_file in ("memory.limit_in_bytes", "memory.max"):
            if (directory / limit_file).exists():
                (directory / limit_file).write_text(str(ram_mb * 2**20))
    return dirs


def cgroup_pids(instance: str, name: str) -> set[int]:
    pids: set[int] = set()
    for directory in cgroup_dirs(instance, name):
        for sub, _, _ in os.walk(directory):  # the host's systemd adds and removes cgroups
            try:
                with open(os.path.join(sub, "cgroup.procs")) as procs:
                    pids.update(int(p) for p in procs.read().split())
            except OSError:
                pass
    return pids


def remove_cgroups(instance: str, name: str) -> None:
    for directory in cgroup_dirs(instance, name):
        if not directory.is_dir():
            continue
        for sub, _, _ in sorted(os.walk(directory), key=lambda w: -len(w[0])):
            try:
                os.rmdir(sub)
            except OSError:
                pass
    parent = CGROUP_ROOT / "systemd" / "celery-fleet"
    for top in (parent, CGROUP_ROOT / "unified" / "celery-fleet"):
        try:
            top.rmdir()
        except OSError:
            pass


# ---- boot and stop ------------------------------------------------------------------------

def boot(instance: str, host: LabHost, root: Path, console: Path, options: list[str]) -> int:
    cgroups = create_cgroups(instance, host.name, host.spec.ram_mb)
    procs_files = [str(d / "cgroup.procs") for d in cgroups]

    def join_cgroups():  # runs in the child before exec: nspawn starts inside the host's cgroups
        for procs in procs_files:
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))

    command = [
        "systemd-nspawn", "--quiet", "--boot", f"--directory={root}",
        # the machine name keys nspawn's own runtime state (/run/systemd/nspawn/propagate/
        # NAME): one per lab instance, as the host's netns, so labs running at once that both
        # have a "broker" never share it; the host still calls itself by its own name
        f"--machine={host.netns}", f"--hostname={host.name}",
        # both needed where PID 1 is not systemd, else "Failed to open system bus"
        "--register=no", "--keep-unit",
        "--console=read-only", "--resolv-conf=copy-host", "--timezone=off",
        f"--network-namespace-path=/run/netns/{host.netns}",
        # the host's own network namespace: its firewall (nftables) is its own business
        "--capability=CAP_NET_ADMIN", *options,
    ]
    env = dict(os.environ, SYSTEMD_NSPAWN_TMPFS_TMP="0")
    with open(console, "wb") as log, open(os.devnull, "rb") as null:
        process = subprocess.Popen(command, stdin=null, stdout=log, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True, preexec_fn=join_cgroups)
    return process.pid


def nspawn_pid(instance: str, name: str) -> int | None:
    """The systemd-nspawn process of a host: found in the host's own cgroups, never by guess."""
    for pid in sorted(cgroup_pids(instance, name)):
        command = process_cmdline(pid)
        if command and os.path.basename(command[0]) == "systemd-nspawn":
            return pid
    return None


def stop(instance: str, name: str) -> str:
    """Power the host off in order; kill what is left of it after STOP_TIMEOUT_S."""
    supervisor = nspawn_pid(instance, name)
    if supervisor:
        try:
            os.kill(supervisor, signal.SIGTERM)  # nspawn turns it into an orderly poweroff
        except ProcessLookupError:
            pass

    def stopped() -> bool:
        if supervisor:
            reap(supervisor)
        return not cgroup_pids(instance, name)

    if wait_for(stopped, STOP_TIMEOUT_S):
        return "powered off"
    for pid in cgroup_pids(instance, name):  # only processes in the host's own cgroups
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if not wait_for(stopped, 10):
        raise LabError(f"{name}: processes {sorted(cgroup_pids(instance, name))} survive SIGKILL")
    return "killed"


def reap(pid: int) -> None:
    """Collect our own child's exit status, if it is our child, so it leaves no zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
