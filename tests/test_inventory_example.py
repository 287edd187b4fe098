"""The example production inventory is valid: every host's data passes validation."""

import runpy
from pathlib import Path

from celery_fleet.settings import resolve

EXAMPLE = Path(__file__).resolve().parents[1] / "inventory" / "production.example.py"


def test_example_inventory_groups_and_values_are_valid():
    inventory = runpy.run_path(str(EXAMPLE))
    assert len(inventory["brokers"]) == 1
    hosts = [h for group in ("brokers", "embedding_workers", "llm_workers")
             for h in inventory[group]]
    assert len(hosts) == 6
    for name, data in hosts:
        settings = resolve(name, data)
        assert settings["private_address"].startswith("10.20.0.")
    overridden = dict(inventory["embedding_workers"])["embed-2.internal"]
    assert resolve("embed-2.internal", overridden)["embedding_concurrency"] == 8
