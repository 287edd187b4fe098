"""A lab: a named set of real systemd hosts on this machine, brought up and down as one.

    lab = Lab()                        # instance "lab", subnet 10.77.0.0/24
    lab.up(parse_hosts(DEFAULT_HOSTS_SPEC))
    lab.status()
    lab.down()

Everything a lab creates is named after its instance (netns fleet-INSTANCE-*, veths
flINSTANCE-N, bridge flINSTANCE-br, nft table celery_fleet_INSTANCE, cgroups
celery-fleet-INSTANCE-*), so `down` removes all of it even after a crashed run, and never
touches anything else. Only processes inside the lab's own cgroups are ever signalled.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import host as hostlib
from . import network
from .image import DEFAULT_SUITE, SUITES, Image, machine_mirror
from .spec import HostSpec, LabHost, SpecError, place_hosts
from .system import (INOTIFY_INSTANCES, LAB_INOTIFY_INSTANCES, LabError, LabUnavailable,
                     ensure_host_tools, mounts_under, raise_machine_setting,
                     restore_machine_setting, run, wait_for, why_unavailable)

DEFAULT_HOME = "/var/lib/celery-fleet/lab"  # image cache and per-instance state
DEFAULT_INSTANCE = "lab"
DEFAULT_SUBNET = "10.77.0.0/24"
INSTANCE_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")  # short: it is part of interface names
HOSTS_TMPFS_SIZE = "16g"  # upper layers live in RAM: deleting them on ext4 took ~10 s each
BOOT_TIMEOUT_S = 90


def lab_home() -> Path:
    return Path(os.environ.get("FLEET_LAB_HOME", DEFAULT_HOME))


@dataclass
class HostStatus:
    name: str
    ip: str
    spec: HostSpec
    process: str  # "running" or "stopped"
    system: str  # `systemctl is-system-running`, or why it could not be asked
    ram_mb: int | None = None
    cores: int | None = None
    gpus: str = ""


class Lab:
    def __init__(self, instance: str = DEFAULT_INSTANCE, subnet: str | None = None,
                 home: Path | None = None, say=None, suite: str | None = None):
        if not INSTANCE_RE.match(instance):
            raise SpecError(f"lab instance {instance!r}: use 1-8 characters a-z and 0-9, "
                            "starting with a letter")
        if suite is not None and suite not in SUITES:
            raise SpecError(f"--suite {suite!r}: one of {', '.join(SUITES)} (Debian 12, 13)")
        self._suite = suite  # None: the running lab's, or DEFAULT_SUITE
        self.instance = instance
        self.home = Path(home) if home else lab_home()
        self.dir = self.home / instance
        self.hosts_dir = self.dir / "hosts"
        self.state_path = self.dir / "state.json"
        self.ssh_key = self.dir / "ssh" / "id_ed25519"
        self.known_hosts = self.dir / "ssh" / "known_hosts"
        self.saved_ip_forward = self.home / "ip_forward.orig"
        self.saved_inotify_instances = self.home / "inotify_instances.orig"
        self._subnet = subnet
        self._started = time.monotonic()
        self._say = say

    @property
    def suite(self) -> str:
        return self._suite or (self.load_state() or {}).get("suite", DEFAULT_SUITE)

    @property
    def image(self) -> Image:
        return Image(self.home / "image", machine_mirror(), self.suite)

    # ---- helpers -----------------------------------------------------------------------

    def say(self, message: str) -> None:
        line = f"[lab {self.instance} {time.monotonic() - self._started:5.1f}s] {message}"
        (self._say or (lambda text: print(text, flush=True)))(line)

    def load_state(self) -> dict | None:
        try:
            return json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return None

    def _save_state(self, state: dict) -> None:
        partial = self.state_path.with_suffix(".partial")
        partial.write_text(json.dumps(state, indent=2) + "\n")
        partial.replace(self.state_path)

    @contextmanager
    def _locked(self):
        self.home.mkdir(parents=True, exist_ok=True)
        lock_path = self.home / f".{self.instance}.lock"
        with open(lock_path, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LabError(f"another `fleet lab` command is working on lab "
                               f"{self.instance!r}; wait for it to finish") from None
            yield lock_path

    def ssh_command(self, ip: str, user: str = "root", batch: bool = True) -> list[str]:
        """ssh to a lab host, pinning its host keys (strict checking, the lab's known_hosts)."""
        options = {"UserKnownHostsFile": str(self.known_hosts), "StrictHostKeyChecking": "yes",
                   "ConnectTimeout": "2", "LogLevel": "ERROR"}
        if batch:
            options["BatchMode"] = "yes"
        return ["ssh", "-i", str(self.ssh_key),
                *[arg for key, value in options.items() for arg in ("-o", f"{key}={value}")],
                f"{user}@{ip}"]

    def host_running(self, name: str) -> bool:
        return bool(hostlib.cgroup_pids(self.instance, name))

    # ---- up ------------------------------------------------------------------------------

    def up(self, specs: tuple[HostSpec, ...]) -> dict:
        reason = why_unavailable()
        if reason:
            raise LabUnavailable(reason)
        with self._locked():
            state = self.load_state()
            requested = [spec.to_dict() for spec in specs]
            # no --suite: the release the lab runs already (or the default)
            self._suite = self._suite or (state or {}).get("suite", DEFAULT_SUITE)
            if state and ([h["spec"] for h in state["hosts"]] != requested
                          or state.get("suite", DEFAULT_SUITE) != self._suite):
                running = [h["spec"]["name"] for h in state["hosts"] if self.host_running(
                    h["spec"]["name"])]
                if running:
                    raise LabError(
                        f"lab {self.instance!r} is up with other hosts or another Debian "
                        f"release ({state.get('suite', DEFAULT_SUITE)}: {', '.join(running)}): "
                        "run `fleet lab down` first, or use another --instance")
                self._teardown(state)
                state = None
            subnet = self._subnet or (state or {}).get("subnet") or DEFAULT_SUBNET
            if state and state["subnet"] != subnet:
                raise LabError(f"lab {self.instance!r} runs on {state['subnet']}, not {subnet}: "
                               "run `fleet lab down` first")
            return self._up(specs, subnet, state)

    def _up(self, specs: tuple[HostSpec, ...], subnet: str, old: dict | None) -> dict:
        ensure_host_tools(self.say)
        how = self.image.ensure(self.say)
        self.say(f"image {self.image.key}: {how}")
        self.ssh_key.parent.mkdir(parents=True, exist_ok=True)
        if not self.ssh_key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                 f"celery-fleet-lab-{self.instance}", "-f", str(self.ssh_key)])
        self.hosts_dir.mkdir(parents=True, exist_ok=True)
        if not any(p == str(self.hosts_dir.resolve()) for p in mounts_under(str(self.hosts_dir))):
            run(["mount", "-t", "tmpfs", "-o", f"size={HOSTS_TMPFS_SIZE},mode=755",
                 f"celery-fleet-{self.instance}", str(self.hosts_dir)])
        network.ensure_bridge(self.instance, subnet, self.saved_ip_forward)
        raise_machine_setting(INOTIFY_INSTANCES, LAB_INOTIFY_INSTANCES,
                              self.saved_inotify_instances)

        hosts = place_hosts(specs, subnet, self.instance)
        previous = {h["spec"]["name"]: h for h in (old or {}).get("hosts", [])}
        state = {"instance": self.instance, "subnet": subnet, "suite": self.suite,
                 "image": self.image.key,
                 "ssh_key": str(self.ssh_key), "known_hosts": str(self.known_hosts),
                 "hosts": []}
        public_key = self.ssh_key.with_suffix(".pub").read_text()
        machine_cores = os.cpu_count() or 1
        kept = {h.name: previous[h.name] for h in hosts
                if h.name in previous and self.host_running(h.name)}
        to_boot = [h for h in hosts if h.name not in kept]
        with ThreadPoolExecutor(max_workers=max(1, len(to_boot))) as pool:
            booted = dict(zip([h.name for h in to_boot], pool.map(
                lambda h: self._start_host(h, hosts, subnet, public_key, machine_cores),
                to_boot)))
        state["hosts"] = [kept.get(h.name) or booted[h.name] for h in hosts]
        self._save_state(state)
        self.known_hosts.write_text(
            "".join(line + "\n" for h in state["hosts"] for line in h["known_hosts"]))
        if booted:
            self.say(f"launched {', '.join(booted)}; waiting for sshd and systemd")
        else:
            self.say("all hosts were already running")
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            states = list(pool.map(self._wait_ready, hosts))
        for lab_host, system_state in zip(hosts, states):
            self.say(f"{lab_host.name:<12} {lab_host.ip:<12} {lab_host.spec.describe():<32} "
                     f"systemd: {system_state}")
        self.say(f"lab up: {len(hosts)} hosts; ssh: fleet lab ssh NAME; inventory: "
                 "inventory/lab.py")
        return state

    def _start_host(self, lab_host: LabHost, all_hosts, subnet: str, public_key: str,
                    machine_cores: int) -> dict:
        self._remove_host(lab_host.name, lab_host.netns, lab_host.veth)  # leftovers of a crash
        root = hostlib.mount_overlay(self.image.rootfs, self.hosts_dir, lab_host.name)
        known = hostlib.write_identity(root, lab_host, all_hosts, public_key)
        options = hostlib.write_hardware(root, lab_host.spec, machine_cores)
        if lab_host.spec.cores > machine_cores:
            self.say(f"{lab_host.name}: reports {lab_host.spec.cores} cores but this machine "
                     f"has {machine_cores}; it runs on all {machine_cores}")
        network.add_host_link(self.instance, subnet, lab_host.netns, lab_host.veth, lab_host.ip)
        console = hostlib.overlay_paths(self.hosts_dir, lab_host.name)["console"]
        pid = hostlib.boot(self.instance, lab_host, root, console, options)
        return {"spec": lab_host.spec.to_dict(), "ip": lab_host.ip, "veth": lab_host.veth,
                "netns": lab_host.netns, "pid": pid, "known_hosts": known,
                "console": str(console)}

    def _wait_ready(self, lab_host: LabHost) -> str:
        ssh = self.ssh_command(lab_host.ip)
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while run([*ssh, "true"], check=False, timeout=10).returncode != 0:
            if not self.host_running(lab_host.name):
                raise LabError(f"{lab_host.name}: the container exited while booting; "
                               f"console: {self._console_tail(lab_host.name)}")
            if time.monotonic() > deadline:
                raise LabError(f"{lab_host.name}: no SSH answer at {lab_host.ip} after "
                               f"{BOOT_TIMEOUT_S} s; console: {self._console_tail(lab_host.name)}")
            time.sleep(0.2)
        result = run([*ssh, "timeout", str(BOOT_TIMEOUT_S), "systemctl", "is-system-running",
                      "--wait"], check=False, timeout=BOOT_TIMEOUT_S + 10)
        system_state = result.stdout.strip() or result.stderr.strip()
        if system_state != "running":
            failed = run([*ssh, "systemctl", "--failed", "--no-legend", "--plain"],
                         check=False).stdout.strip()
            system_state += f" (failed units: {failed or 'none listed'})"
        return system_state

    # ---- a power cut, and the power back (tests of losing a machine) ---------------------

    def power_cut(self, name: str) -> None:
        """Every process of the host dies at once (SIGKILL), as when its power is cut: no
        shutdown, nothing flushed. Its disk (the overlay), address and cgroups stay."""
        if hostlib.cgroup_pids(self.instance, name):
            for pid in hostlib.cgroup_pids(self.instance, name):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if not wait_for(lambda: not hostlib.cgroup_pids(self.instance, name), 10):
            raise LabError(f"{name}: processes survive SIGKILL")
        self.say(f"{name}: power cut")

    def power_on(self, name: str) -> str:
        """Boot a host whose power was cut, on the disk it had; its systemd state."""
        state = self.load_state()
        record = next(h for h in state["hosts"] if h["spec"]["name"] == name)
        specs = tuple(HostSpec.from_dict(h["spec"]) for h in state["hosts"])
        lab_host = next(h for h in place_hosts(specs, state["subnet"], self.instance)
                        if h.name == name)
        paths = hostlib.overlay_paths(self.hosts_dir, name)
        options = hostlib.write_hardware(paths["merged"], lab_host.spec, os.cpu_count() or 1)
        record["pid"] = hostlib.boot(self.instance, lab_host, paths["merged"],
                                     paths["console"], options)
        self._save_state(state)
        system_state = self._wait_ready(lab_host)
        self.say(f"{name}: powered on again ({system_state})")
        return system_state

    def _console_tail(self, name: str, lines: int = 15) -> str:
        console = hostlib.overlay_paths(self.hosts_dir, name)["console"]
        try:
            return "\n" + "\n".join(console.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no console log)"

    # ---- down ----------------------------------------------------------------------------

    def down(self) -> list[str]:
        if os.geteuid() != 0:
            raise LabUnavailable("`fleet lab down` needs root, like `up`")
        self.home.mkdir(parents=True, exist_ok=True)
        with self._locked() as lock_path:
            names = self._teardown(self.load_state())
            lock_path.unlink(missing_ok=True)  # nothing left behind, not even the lock file
        self.say(f"lab down: removed {', '.join(names) or 'nothing (no lab was up)'}")
        return names

    def _leftover_names(self) -> set[str]:
        """Hosts of this instance found on the machine, whether or not a state file names them."""
        names = set()
        prefix = f"celery-fleet-{self.instance}-"
        for hierarchy in (hostlib.CGROUP_ROOT / "systemd" / "celery-fleet",):
            if hierarchy.is_dir():
                names |= {p.name[len(prefix):] for p in hierarchy.iterdir()
                          if p.name.startswith(prefix)}
        ns_prefix = f"fleet-{self.instance}-"
        names |= {ns[len(ns_prefix):] for ns in network.netns_names() if ns.startswith(ns_prefix)}
        if self.hosts_dir.is_dir():
            names |= {p.name for p in self.hosts_dir.iterdir() if p.is_dir()}
        return names

    def _teardown(self, state: dict | None) -> list[str]:
        recorded = {h["spec"]["name"]: h for h in (state or {}).get("hosts", [])}
        names = sorted(set(recorded) | self._leftover_names())
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            list(pool.map(lambda name: hostlib.stop(self.instance, name), names))
        for name in names:
            self._remove_host(name, f"fleet-{self.instance}-{name}",
                              recorded.get(name, {}).get("veth"))
        veth_prefix = f"fl{self.instance}-"
        for link in network.link_names():  # veths whose host name was lost with the state
            if link.startswith(veth_prefix) and link != network.bridge_name(self.instance):
                run(["ip", "link", "del", link], check=False)
        for mount in mounts_under(str(self.hosts_dir)):
            run(["umount", mount])
        network.remove_shared(self.instance)
        network.restore_ip_forward(self.saved_ip_forward)
        if not network.any_lab_bridge():
            restore_machine_setting(INOTIFY_INSTANCES, self.saved_inotify_instances)
        run(["rm", "-rf", str(self.dir)])
        return names

    def _remove_host(self, name: str, netns: str, veth: str | None) -> None:
        if hostlib.cgroup_pids(self.instance, name):
            hostlib.stop(self.instance, name)
        for mount in mounts_under(str(self.hosts_dir / name)):
            run(["umount", mount])
        network.remove_host_link(netns, veth or "")
        hostlib.remove_cgroups(self.instance, name)

    # ---- status --------------------------------------------------------------------------

    def status(self) -> list[HostStatus]:
        state = self.load_state()
        if not state:
            return []
        with ThreadPoolExecutor(max_workers=len(state["hosts"]) or 1) as pool:
            return list(pool.map(self._host_status, state["hosts"]))

    def _host_status(self, record: dict) -> HostStatus:
        spec = HostSpec.from_dict(record["spec"])
        status = HostStatus(spec.name, record["ip"], spec, "stopped", "-")
        if not self.host_running(spec.name):
            return status
        status.process = "running"
        probe = ("systemctl is-system-running; LANG=C vmstat -s | head -1; "
                 "getconf _NPROCESSORS_ONLN; "
                 "nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>&1 | "
                 "paste -sd+ || true")
        result = run([*self.ssh_command(record["ip"]), probe], check=False, timeout=20)
        lines = result.stdout.splitlines()
        if len(lines) < 3:
            status.system = "no SSH answer: " + (result.stderr.strip() or "no output")
            return status
        status.system = lines[0]
        status.ram_mb = int(lines[1].split()[0]) // 1024
        status.cores = int(lines[2])
        status.gpus = lines[3] if len(lines) > 3 and "not found" not in lines[3] else ""
        return status


def exec_ssh(lab: Lab, name: str, user: str, command: list[str]) -> None:
    """Replace this process with an ssh session (or command) on a lab host."""
    state = lab.load_state()
    hosts = {h["spec"]["name"]: h for h in (state or {}).get("hosts", [])}
    if name not in hosts:
        raise LabError(f"no host {name!r} in lab {lab.instance!r}"
                       + (f"; hosts: {', '.join(hosts)}" if hosts else " (is it up?)"))
    args = lab.ssh_command(hosts[name]["ip"], user, batch=False)
    if sys.stdin.isatty() and not command:
        args.insert(1, "-t")
    os.execvp("ssh", [*args, *command])

