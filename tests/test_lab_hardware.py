"""The simulated hardware a lab host reports: /proc/meminfo, cpu online list, nvidia-smi."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from celery_fleet.lab import fake_nvidia_smi
from celery_fleet.lab.host import cpu_online, fake_meminfo, gpu_config
from celery_fleet.lab.inventory import inventory_groups, inventory_text
from celery_fleet.lab.spec import DEFAULT_HOSTS_SPEC, HostSpec, parse_hosts, place_hosts

REAL_MEMINFO = """MemTotal:       24634056 kB
MemFree:        20000000 kB
MemAvailable:   22000000 kB
Buffers:          100000 kB
Cached:          1000000 kB
"""


def test_meminfo_reports_the_simulated_ram_and_keeps_the_rest():
    text = fake_meminfo(REAL_MEMINFO, 4096)
    values = {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()}
    assert values["MemTotal"] == 4096 * 1024
    assert values["MemAvailable"] <= values["MemTotal"]
    assert values["Buffers"] == 100000 and values["Cached"] == 1000000


@pytest.mark.parametrize("cores, text", [(1, "0\n"), (2, "0-1\n"), (64, "0-63\n")])
def test_cpu_online_list(cores, text):
    assert cpu_online(cores) == text


def nvidia_smi(tmp_path: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps(config))
    return subprocess.run([sys.executable, fake_nvidia_smi.__file__, *args], capture_output=True,
                          text=True, env=dict(os.environ, FAKE_NVIDIA_SMI_CONFIG=str(path)))


def test_fake_nvidia_smi_answers_csv_queries(tmp_path):
    config = gpu_config(HostSpec("g", 65536, 8, (24576, 24576)))
    out = nvidia_smi(tmp_path, config, "--query-gpu=index,name,memory.total,memory.used",
                     "--format=csv,noheader,nounits")
    assert out.returncode == 0
    assert out.stdout.splitlines() == ["0, NVIDIA Lab GPU 24GB, 24576, 0",
                                       "1, NVIDIA Lab GPU 24GB, 24576, 0"]
    with_header = nvidia_smi(tmp_path, config, "--query-gpu=index,memory.total", "--format=csv")
    assert with_header.stdout.splitlines() == ["index, memory.total [MiB]", "0, 24576 MiB",
                                               "1, 24576 MiB"]


def test_fake_nvidia_smi_gives_each_gpu_a_stable_distinct_uuid(tmp_path):
    config = gpu_config(HostSpec("g", 65536, 8, (81920,) * 8))
    uuids = nvidia_smi(tmp_path, config, "--query-gpu=uuid", "--format=csv,noheader").stdout.split()
    assert len(set(uuids)) == 8 and all(u.startswith("GPU-") for u in uuids)
    assert uuids == nvidia_smi(tmp_path, config, "--query-gpu=uuid",
                               "--format=csv,noheader").stdout.split()


@pytest.mark.parametrize("mode, code, message", [
    ("broken", 9, "couldn't communicate with the NVIDIA driver"),
    ("mismatch", 18, "Driver/library version mismatch"),
])
def test_fake_nvidia_smi_fails_like_a_broken_driver(tmp_path, mode, code, message):
    config = gpu_config(HostSpec("g", 8192, 2, (24576,), nvidia_smi=mode))
    out = nvidia_smi(tmp_path, config, "--query-gpu=index", "--format=csv")
    assert out.returncode == code and message in out.stdout


def test_fake_nvidia_smi_refuses_unknown_fields_as_the_real_one_does(tmp_path):
    out = nvidia_smi(tmp_path, gpu_config(HostSpec("g", 8192, 2, (24576,))),
                     "--query-gpu=index,flux.capacitor", "--format=csv")
    assert out.returncode == 2 and 'Field "flux.capacitor" is not a valid field' in out.stdout


def test_fake_nvidia_smi_lists_gpus(tmp_path):
    out = nvidia_smi(tmp_path, gpu_config(HostSpec("g", 8192, 2, (16384,))), "-L")
    assert out.stdout.startswith("GPU 0: NVIDIA Lab GPU 16GB (UUID: GPU-")


def test_inventory_groups_follow_roles_and_pin_host_keys():
    hosts = place_hosts(parse_hosts(DEFAULT_HOSTS_SPEC), "10.77.0.0/24", "lab")
    state = {"ssh_key": "/k", "known_hosts": "/kh",
             "hosts": [{"spec": h.spec.to_dict(), "ip": h.ip} for h in hosts]}
    groups = inventory_groups(state)
    assert [n for n, _ in groups["brokers"]] == ["broker"]
    assert [n for n, _ in groups["embedding_workers"]] == ["cpu-small", "gpu-box"]
    assert [n for n, _ in groups["llm_workers"]] == ["cpu-small", "gpu-box"]
    assert [n for n, _ in groups["celery_clients"]] == ["app"]
    data = dict(groups["llm_workers"])["gpu-box"]
    assert data["ssh_hostname"] == "10.77.0.13" and data["ssh_user"] == "deploy"
    assert data["ssh_strict_host_key_checking"] == "yes" and data["ssh_known_hosts_file"] == "/kh"
    assert data["_sudo"] is True and data["lab_gpu_vram_mb"] == [24576]


def test_an_inventory_with_overrides_sets_them_where_asked_and_keeps_the_brokers_named(
        tmp_path, monkeypatch):
    hosts = place_hosts(parse_hosts("b1:ram=1G,cores=1,roles=broker "
                                    "b2:ram=1G,cores=1,roles=broker w1:ram=2G,cores=1"),
                        "10.77.9.0/24", "inv")
    state = {"ssh_key": "/k", "known_hosts": "/kh",
             "hosts": [{"spec": h.spec.to_dict(), "ip": h.ip} for h in hosts]}
    # the inventory file as pyinfra runs it, over this state
    monkeypatch.setenv("FLEET_LAB_INSTANCE", "inv")
    monkeypatch.setattr("celery_fleet.lab.Lab.load_state", lambda self: state)
    namespace: dict = {}
    exec(inventory_text({"broker": "redis"}, {"w1": {"flower": True}}, brokers=["b1"]),
         namespace)
    assert [n for n, _ in namespace["brokers"]] == ["b1"]
    worker = dict(namespace["embedding_workers"])["w1"]
    assert worker["broker"] == "redis" and worker["flower"] is True
    assert worker["fake_openai_backend"] is True  # the lab's own data stays
    assert dict(namespace["brokers"])["b1"]["broker"] == "redis"
    assert "flower" not in dict(namespace["brokers"])["b1"]
