"""pytest fixtures for tests that need real systemd hosts.

    pytest_plugins = ["celery_fleet.lab.pytest_plugin"]

    def test_something(lab):
        assert lab.ssh("broker", "systemctl is-system-running").stdout.strip() == "running"

The `lab` fixture brings the default lab (broker, cpu-small, gpu-box, app) up once per test
session and Debian release, apart from a developer's own `fleet lab up`, and down at the end:
every lab test runs on Debian 12 (instance "test", 10.77.1.0/24), then on Debian 13 (instance
"test13", 10.77.4.0/24). FLEET_LAB_SUITES=bookworm runs one release only (a quicker local run;
CI runs both). Where the machine cannot run a lab (no root, no nspawn) the tests that use it are
skipped with the reason, or fail if FLEET_LAB_REQUIRED=1 (CI sets it: a skipped lab is not a pass).
FLEET_LAB_KEEP=1 leaves the lab up after the session, for debugging (inventory:
FLEET_LAB_INSTANCE=test pyinfra inventory/lab.py ...).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

import pytest

from . import DEFAULT_HOSTS_SPEC, Lab, parse_hosts, why_unavailable
from .image import SUITES

TEST_INSTANCE = "test"
TEST_SUBNET = "10.77.1.0/24"
# the other releases' labs: their own instance and subnet, so a kept lab of each survives
OTHER_SUITES = {"trixie": ("test13", "10.77.4.0/24")}


def lab_suites() -> list[str]:
    wanted = os.environ.get("FLEET_LAB_SUITES", ",".join(SUITES)).replace(",", " ").split()
    unknown = sorted(set(wanted) - set(SUITES))
    if unknown or not wanted:
        raise pytest.UsageError(f"FLEET_LAB_SUITES={os.environ.get('FLEET_LAB_SUITES')!r}: "
                                f"one or more of {', '.join(SUITES)}")
    return [suite for suite in SUITES if suite in wanted]


@dataclass
class RunningLab:
    lab: Lab
    state: dict

    @property
    def instance(self) -> str:
        return self.lab.instance

    @property
    def names(self) -> list[str]:
        return [h["spec"]["name"] for h in self.state["hosts"]]

    def ip(self, name: str) -> str:
        return next(h["ip"] for h in self.state["hosts"] if h["spec"]["name"] == name)

    def ssh(self, name: str, command: str, user: str = "root", check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess:
        args = [*self.lab.ssh_command(self.ip(name), user), command]
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{name}: `{command}` exited {result.returncode}: "
                                 f"{result.stderr.strip() or result.stdout.strip()}")
        return result

    def env(self) -> dict:
        """Environment for commands (pyinfra inventory/lab.py ...) that should use this lab."""
        return dict(os.environ, FLEET_LAB_INSTANCE=self.instance)


def require_lab() -> None:
    reason = why_unavailable()
    if reason:
        if os.environ.get("FLEET_LAB_REQUIRED") == "1":
            pytest.fail(f"the lab is required here (FLEET_LAB_REQUIRED=1) but: {reason}")
        pytest.skip(f"lab unavailable: {reason}")


@pytest.fixture(scope="session", params=lab_suites())
def lab(request):
    require_lab()
    suite = request.param
    name, subnet = OTHER_SUITES.get(suite, (TEST_INSTANCE, TEST_SUBNET))
    if suite not in OTHER_SUITES:
        name = os.environ.get("FLEET_LAB_TEST_INSTANCE", name)
        subnet = os.environ.get("FLEET_LAB_TEST_SUBNET", subnet)
    instance = Lab(instance=name, subnet=subnet, suite=suite)
    state = instance.up(parse_hosts(DEFAULT_HOSTS_SPEC))
    yield RunningLab(instance, state)
    if os.environ.get("FLEET_LAB_KEEP") != "1":
        instance.down()


def pytest_collection_modifyitems(items):
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lab)
