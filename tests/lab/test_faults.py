"""Faults (issue #5): an unreachable host does not stop the rest; a broken nvidia-smi gives a
CPU plan and a warning."""

import ipaddress
import subprocess
import sys

from .conftest import ROOT, deploy

GHOST_INVENTORY = """
import os
from celery_fleet.lab import Lab
from celery_fleet.lab.inventory import inventory_groups

_groups = inventory_groups(Lab(os.environ["FLEET_LAB_INSTANCE"]).load_state())
_ghost = dict(_groups["embedding_workers"][0][1], ssh_hostname="GHOST_IP",
              private_address="GHOST_IP", ssh_connect_retries=0)
brokers = _groups["brokers"]
celery_clients = _groups["celery_clients"]
embedding_workers = _groups["embedding_workers"] + [("ghost", _ghost)]
llm_workers = _groups["llm_workers"]
"""


def test_an_unreachable_host_does_not_stop_the_others(lab, deployed, tmp_path):
    ghost_ip = str(ipaddress.ip_network(lab.state["subnet"]).network_address + 99)
    inventory = tmp_path / "with_ghost.py"
    inventory.write_text(GHOST_INVENTORY.replace("GHOST_IP", ghost_ip))
    try:
        result = subprocess.run([sys.executable, "-m", "pyinfra", "-y", str(inventory),
                                 "deploy.py"], cwd=ROOT, env=lab.env(), capture_output=True,
                                text=True, timeout=600)
        firewall = lab.ssh("broker", "nft list table inet celery_fleet_redis").stdout
    finally:
        deploy(lab)  # the fleet without the ghost again
    output = result.stdout + result.stderr
    assert ghost_ip in firewall  # its worker may be running: it keeps its access to Redis
    assert result.returncode != 0  # the run is not a success ...
    assert "Grand total" in output  # ... but every other host was deployed
    tail = output.strip().splitlines()[-2:]
    assert tail == ["--> celery-fleet: deployed 4 of 5 host(s)",
                    "    [ghost] unreachable: not changed; deploy again once it answers SSH"]


def test_a_broken_nvidia_smi_gives_a_cpu_plan_and_a_warning(lab, deployed):
    config = "/etc/celery-fleet-lab/gpus.json"
    lab.ssh("gpu-box", f"cp {config} {config}.ok && sed -i 's/\"mode\": \"ok\"/\"mode\": "
                       f"\"broken\"/' {config}")
    try:
        result = subprocess.run([sys.executable, "-m", "celery_fleet.cli", "plan",
                                 "inventory/lab.py"], cwd=ROOT, env=lab.env(),
                                capture_output=True, text=True, timeout=120)
    finally:
        lab.ssh("gpu-box", f"mv {config}.ok {config}")
    assert result.returncode == 0, result.stderr
    gpu_box = result.stdout.split("gpu-box:", 1)[1]
    assert "no GPU" in gpu_box.splitlines()[0]
    assert "llm worker: cpu, pool prefork" in gpu_box
    assert ("WARNING: GPU detection failed (nvidia-smi exit 9: NVIDIA-SMI has failed because "
            "it couldn't communicate with the NVIDIA driver") in gpu_box
