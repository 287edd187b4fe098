"""Taking a host out of the fleet (issue #11, 5): a host moved to the `retired` group keeps no
unit, user, virtualenv, config or firewall rule of ours; then it comes back with a deploy."""

import shlex

from .conftest import deploy, wait_until_answers

RETIRE_CPU_SMALL = """
import os
from celery_fleet.lab import Lab
from celery_fleet.lab.inventory import inventory_groups

_groups = inventory_groups(Lab(os.environ["FLEET_LAB_INSTANCE"]).load_state())
retired = [entry for entry in _groups["embedding_workers"] if entry[0] == "cpu-small"]
for _name, _hosts in _groups.items():
    globals()[_name] = [entry for entry in _hosts if entry[0] != "cpu-small"]
"""
# anything of ours on a host, whatever its name: units, files, the user, processes, rules
LEFTOVERS = (
    "find / -xdev \\( -iname '*celery*' -o -iname 'fleet-*' \\) -not -path '/proc/*' "
    "-not -path '/usr/share/*' -not -path '/var/lib/dpkg/*' -not -path '/var/cache/*' "
    "-not -path '/etc/celery-fleet-lab*' "  # the lab's simulated hardware, not the deploy's
    "-print; "
    "getent passwd celery; getent group celery; ps -eo args | grep '[c]elery -A'; "
    "systemctl list-unit-files --no-legend 'celery*'; systemctl list-units --all --no-legend "
    "'celery*'; ls /usr/local/share/ca-certificates"
)


def reaches_redis(lab, host: str) -> bool:
    return lab.ssh(host, "timeout 3 bash -c '</dev/tcp/broker/6379'", check=False
                   ).returncode == 0


def test_a_retired_host_keeps_nothing_of_ours_and_can_come_back(lab, deployed, tmp_path):
    inventory = tmp_path / "retire_cpu_small.py"
    inventory.write_text(RETIRE_CPU_SMALL)
    assert lab.ssh("cpu-small", LEFTOVERS, check=False).stdout.strip()  # the check can fail
    assert reaches_redis(lab, "cpu-small")
    try:
        result = deploy(lab, str(inventory))
        assert "[cpu-small] retired: removing every unit, file and user" in result["output"]
        left = lab.ssh("cpu-small", LEFTOVERS, check=False).stdout.strip()
        assert left == "", f"cpu-small keeps: {left}"
        assert not reaches_redis(lab, "cpu-small")  # the broker's firewall forgot it
        assert lab.ssh("cpu-small", "nft list tables", check=False).stdout.strip() == ""
        # retiring again finds nothing to do
        again = deploy(lab, str(inventory))
        assert again["changed"] == 0, again["output"][-3000:]
    finally:
        deploy(lab)
    for node in ("embedding-1", "llm-cpu"):
        wait_until_answers(lab, "cpu-small", f"{node}@cpu-small")
    assert reaches_redis(lab, "cpu-small")
    assert lab.ssh("cpu-small", f"systemctl is-active {shlex.quote('celery-worker')}"
                   ).stdout.strip() == "active"
