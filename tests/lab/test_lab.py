"""The lab itself, on real systemd hosts: what issue #2 promises of each host, and that `down`
leaves nothing behind."""

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from celery_fleet.lab import DEFAULT_HOSTS_SPEC, Lab, parse_hosts
from celery_fleet.lab.host import cgroup_pids, nspawn_pid
from celery_fleet.lab.pytest_plugin import lab_for
from celery_fleet.lab.system import wait_for

from .footprint import machine_footprint

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {s.name: s for s in parse_hosts(DEFAULT_HOSTS_SPEC)}


def failed_units(lab, name: str) -> str:
    """What made a host's systemd degraded: each failed unit with its last journal lines."""
    return lab.ssh(name, "for u in $(systemctl --failed --no-legend --plain | cut -d' ' -f1); "
                         "do systemctl status --no-pager -n 15 $u; done", check=False).stdout


def test_each_host_boots_systemd_as_pid_1(lab):
    for name in lab.names:
        out = lab.ssh(name, "cat /proc/1/comm; systemctl is-system-running", check=False)
        assert out.stdout.split() == ["systemd", "running"], (name, failed_units(lab, name))


def test_each_host_has_its_own_name_and_address_on_the_bridge(lab):
    for name in lab.names:
        out = lab.ssh(name, "hostname; ip -4 -o addr show dev eth0").stdout
        assert out.splitlines()[0] == name
        assert f"inet {lab.ip(name)}/24" in out
    # hosts reach each other by name (the fleet's hosts resolve each other via /etc/hosts)
    lab.ssh("cpu-small", "timeout 3 bash -c '</dev/tcp/broker/22'")


def test_host_keys_are_unique_and_checked_strictly(lab, tmp_path):
    known = Path(lab.state["known_hosts"]).read_text().splitlines()
    keys_by_host = {}
    for line in known:
        hosts, key_type, key = line.split()
        keys_by_host.setdefault(hosts, set()).add(key)
    assert len(keys_by_host) == len(EXPECTED)
    all_keys = [k for keys in keys_by_host.values() for k in keys]
    assert len(all_keys) == len(set(all_keys)), "two hosts share a host key"

    # a known_hosts that pins other keys for broker: ssh must refuse, not ask or accept
    broker_ip = lab.ip("broker")
    forged = [line.replace(f"{broker_ip},broker", "x").replace(
        f"{lab.ip('cpu-small')},cpu-small", f"{broker_ip},broker") for line in known]
    forged_file = tmp_path / "known_hosts"
    forged_file.write_text("\n".join(forged) + "\n")
    args = [a.replace(lab.state["known_hosts"], str(forged_file))
            for a in lab.lab.ssh_command(broker_ip)]
    result = subprocess.run([*args, "true"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr or \
        "Host key verification failed" in result.stderr


def test_deploy_user_has_passwordless_sudo(lab):
    for name in lab.names:
        assert lab.ssh(name, "sudo -n id -u", user="deploy").stdout.strip() == "0"


def test_pyinfra_reaches_every_host_and_sees_the_simulated_sizes(lab):
    result = subprocess.run(
        [sys.executable, "-m", "pyinfra", "inventory/lab.py", "fact", "hardware.Memory",
         "hardware.Cpus", "-y"],
        cwd=ROOT, env=lab.env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    facts = {}
    for match in re.finditer(r"Fact data for: (\S+)\n(\{.*?\n\})", result.stdout + result.stderr, re.S):
        facts[match.group(1)] = json.loads(match.group(2))
    assert facts["hardware.Memory"] == {n: s.ram_mb for n, s in EXPECTED.items()}
    assert facts["hardware.Cpus"] == {n: s.cores for n, s in EXPECTED.items()}


def test_simulated_gpu_answers_nvidia_smi_and_cpu_hosts_have_none(lab):
    out = lab.ssh("gpu-box", "nvidia-smi --query-gpu=index,memory.total "
                             "--format=csv,noheader,nounits").stdout
    assert out.splitlines() == ["0, 24576"]
    for name in ("broker", "cpu-small"):
        assert lab.ssh(name, "command -v nvidia-smi", check=False).returncode != 0


def test_apt_reaches_the_debian_archive(lab):
    lab.ssh("broker", "apt-get -q update", timeout=180)
    policy = lab.ssh("broker", "apt-cache policy redis-server").stdout
    assert re.search(r"Candidate: \d", policy), policy


def test_hosts_run_the_labs_debian_release_with_its_own_apt_sources(lab):
    suite = lab.state["suite"]
    for name in ("broker", "app"):
        assert lab.ssh(name, ". /etc/os-release; echo $VERSION_CODENAME").stdout.strip() == suite
        suites = lab.ssh(name, "grep -h '^Suites:' /etc/apt/sources.list.d/*.sources").stdout
        assert suites.split() == ["Suites:", suite, f"{suite}-updates", "Suites:",
                                  f"{suite}-security"], suites
    other = next(s for s in ("bookworm", "trixie") if s != suite)
    from celery_fleet.lab import LabError
    with pytest.raises(LabError, match="another Debian release"):
        Lab(lab.instance, suite=other).up(parse_hosts(DEFAULT_HOSTS_SPEC))


def test_status_reports_each_host_running_at_its_simulated_size(lab):
    statuses = {s.name: s for s in lab.lab.status()}
    assert set(statuses) == set(EXPECTED)
    for name, spec in EXPECTED.items():
        status = statuses[name]
        assert (status.process, status.system) == ("running", "running"), \
            (name, failed_units(lab, name))
        assert (status.ram_mb, status.cores) == (spec.ram_mb, spec.cores)
    assert statuses["gpu-box"].gpus == "24576"


def test_up_again_is_a_no_op(lab):
    before = {n: nspawn_pid(lab.instance, n) for n in lab.names}
    messages = []
    again = Lab(lab.instance, say=messages.append).up(parse_hosts(DEFAULT_HOSTS_SPEC))
    assert {n: nspawn_pid(lab.instance, n) for n in lab.names} == before
    assert any("already running" in m for m in messages)
    assert again["hosts"] == lab.state["hosts"]


def test_up_with_other_hosts_is_refused_while_the_lab_runs(lab):
    from celery_fleet.lab import LabError
    with pytest.raises(LabError, match="is up with other hosts"):
        Lab(lab.instance).up(parse_hosts("solo:ram=1G,cores=1"))


def _lab_python(*args):
    return [sys.executable, "-m", "celery_fleet.cli", "lab", *args]


def test_down_leaves_nothing_behind_and_spares_other_labs(lab, tmp_path):
    instance, subnet = lab_for(lab.suite, "down")
    other = Lab(instance, subnet=subnet, say=lambda _: None)
    other.down()  # what a run that failed half-way may have left (a CI run did)
    before = machine_footprint(other.dir)
    survivors = {n: cgroup_pids(lab.instance, n) for n in lab.names}
    try:
        other.up(parse_hosts("solo:ram=1G,cores=1 duo:ram=2G,cores=2"))
        assert machine_footprint(other.dir) != before  # the check below can fail
    finally:
        other.down()
    assert machine_footprint(other.dir) == before
    for name, pids in survivors.items():  # the session's lab was not touched
        assert nspawn_pid(lab.instance, name) in pids


def test_down_cleans_up_after_a_crashed_up(lab):
    instance, subnet = lab_for(lab.suite, "crash")
    crash = Lab(instance, subnet=subnet, say=lambda _: None)
    crash.down()  # what a run that failed half-way may have left
    before = machine_footprint(crash.dir)
    try:
        _crash_up_then_down(crash, subnet, before)
    finally:
        crash.down()  # a no-op when the test passed


def _crash_up_then_down(crash: Lab, subnet: str, before: dict) -> None:
    up = subprocess.Popen(_lab_python("--instance", crash.instance, "up", "--subnet",
                                      subnet, "--hosts",
                                      "c1:ram=1G,cores=1 c2:ram=1G,cores=1"),
                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill it while it is booting hosts: a container running, no state file written yet or so
    assert wait_for(lambda: cgroup_pids(crash.instance, "c1") or up.poll() is not None, 60)
    up.send_signal(signal.SIGKILL)
    up.wait()
    crash.state_path.unlink(missing_ok=True)  # a crash may also lose the state file
    down = subprocess.run(_lab_python("--instance", crash.instance, "down"), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert "c1" in down.stdout
    assert machine_footprint(crash.dir) == before

