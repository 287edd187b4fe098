"""The running lab as pyinfra inventory groups (used by inventory/lab.py).

Pure: a lab state (what `fleet lab up` wrote) in, pyinfra's (name, data) host tuples by group
out, so the mapping is tested without a lab.
"""

from __future__ import annotations

import glob

from ..layout import FAKE_OPENAI_PORT
from .spec import ROLE_GROUPS, HostSpec


MACHINE_CA_DIR = "/usr/local/share/ca-certificates"


def host_data(state: dict, record: dict) -> dict:
    """How pyinfra reaches a lab host: as `deploy` with sudo, host keys pinned strictly."""
    spec = HostSpec.from_dict(record["spec"])
    return {
        "ssh_hostname": record["ip"],
        "ssh_user": "deploy",
        "ssh_key": state["ssh_key"],
        "ssh_known_hosts_file": state["known_hosts"],
        "ssh_strict_host_key_checking": "yes",
        "ssh_allow_agent": False,
        "ssh_look_for_keys": False,
        "_sudo": True,
        # what the lab simulates, so tests can compare facts with it
        "lab_ram_mb": spec.ram_mb,
        "lab_cores": spec.cores,
        "lab_gpu_vram_mb": list(spec.gpu_vram_mb),
        "private_address": record["ip"],
        # the machine's own CAs (TLS to PyPI may pass a proxy that re-signs it): see LAB.md
        "extra_ca_certificates": sorted(glob.glob(f"{MACHINE_CA_DIR}/*.crt")),
    }


# Worker hosts of the lab call the fake OpenAI-compatible API the deploy runs beside them.
LAB_WORKER_DATA = {
    "fake_openai_backend": True,
    "embedding_api_url": f"http://127.0.0.1:{FAKE_OPENAI_PORT}/v1",
    "llm_api_url": f"http://127.0.0.1:{FAKE_OPENAI_PORT}/v1",
}


def inventory_groups(state: dict) -> dict[str, list[tuple[str, dict]]]:
    groups: dict[str, list[tuple[str, dict]]] = {group: [] for group in ROLE_GROUPS.values()}
    for record in state["hosts"]:
        spec = HostSpec.from_dict(record["spec"])
        data = host_data(state, record)
        if set(spec.roles) & {"embedding", "llm"}:
            data.update(LAB_WORKER_DATA)
        for group in spec.groups:
            groups[group].append((spec.name, data))
    return groups


def overridden_groups(state: dict, every_host: dict, by_host: dict[str, dict],
                      brokers: list[str] | None = None) -> dict[str, list[tuple[str, dict]]]:
    """inventory_groups with host data overridden: every_host's values on each host, then
    by_host's on the hosts it names; brokers (names) keeps only those in the brokers group."""
    groups = inventory_groups(state)
    for hosts in groups.values():
        for name, data in hosts:
            data.update(every_host)
            data.update(by_host.get(name, {}))
    if brokers is not None:
        groups["brokers"] = [h for h in groups["brokers"] if h[0] in brokers]
    return groups


def inventory_text(every_host: dict | None = None, by_host: dict[str, dict] | None = None,
                   brokers: list[str] | None = None) -> str:
    """A pyinfra inventory file of the running lab (FLEET_LAB_INSTANCE) with host data
    overridden (overridden_groups): what the tests and benchmarks deploy with other settings."""
    return f"""# a lab inventory with host data overridden (celery_fleet/lab/inventory.py)
import os
from celery_fleet.lab import Lab
from celery_fleet.lab.inventory import overridden_groups

globals().update(overridden_groups(Lab(os.environ["FLEET_LAB_INSTANCE"]).load_state(),
                                   {every_host or {}!r}, {by_host or {}!r}, {brokers!r}))
"""
