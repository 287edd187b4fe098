"""pytest fixtures for tests that need real systemd hosts.

    pytest_plugins = ["celery_fleet.lab.pytest_plugin"]

    def test_something(lab):
        assert lab.ssh("broker", "systemctl is-system-running").stdout.strip() == "running"

The `lab` fixture brings the default lab (broker, cpu-small, gpu-box, app) up once per test
session and Debian release, apart from a developer's own `fleet lab up`, and down at the end:
every lab test runs on Debian 12 (instance "test", 10.77.1.0/24) and on Debian 13 (instance
"test13", 10.77.4.0/24). FLEET_LAB_SUITES=bookworm runs one release only. Where the machine
cannot run a lab (no root, no nspawn) the tests that use it are skipped with the reason, or
fail if FLEET_LAB_REQUIRED=1 (CI sets it: a skipped lab is not a pass). FLEET_LAB_KEEP=1 leaves
the lab up after the session, for debugging (inventory: FLEET_LAB_INSTANCE=test pyinfra
inventory/lab.py ...).

The two releases' tests run at the same time under pytest-xdist (`make test`: `-n 2 --dist
loadgroup`): every test of one release is in one xdist group, so one worker process holds that
release's labs from the first of its tests to the last (docs/TESTS.md: the hosts mostly wait on
apt and pip, and two releases in parallel take little more than one). At the end pytest prints
where the time went: each lab's boot and first deploy, each test module, by release.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass

import pytest

from . import DEFAULT_HOSTS_SPEC, Lab, parse_hosts, why_unavailable
from .image import SUITES

# Every lab the tests bring up, by release and purpose: (instance, subnet). Each has its own
# names and subnet, so both releases' labs run at once and a kept lab of each survives; none
# takes yours (10.77.0.0/24) nor the benchmarks' (broker_faults 10.77.7.0/24, lab_cycle .9).
TEST_LABS = {
    "bookworm": {"lab": ("test", "10.77.1.0/24"), "down": ("tdown", "10.77.2.0/24"),
                 "crash": ("tcrash", "10.77.3.0/24"), "rabbit": ("rabbit", "10.77.8.0/24")},
    "trixie": {"lab": ("test13", "10.77.4.0/24"), "down": ("tdown13", "10.77.6.0/24"),
               "crash": ("tcrash13", "10.77.10.0/24"), "rabbit": ("rabbit13", "10.77.5.0/24")},
}
# the xdist user_properties key that carries a phase's time from a worker to the report
PHASE = "fleet-phase"
# the report's column for the tests of no lab (the pure ones) and work for every lab
OTHER = "other"


def lab_suites() -> list[str]:
    wanted = os.environ.get("FLEET_LAB_SUITES", ",".join(SUITES)).replace(",", " ").split()
    unknown = sorted(set(wanted) - set(SUITES))
    if unknown or not wanted:
        raise pytest.UsageError(f"FLEET_LAB_SUITES={os.environ.get('FLEET_LAB_SUITES')!r}: "
                                f"one or more of {', '.join(SUITES)}")
    return [suite for suite in SUITES if suite in wanted]


def lab_for(suite: str, purpose: str = "lab") -> tuple[str, str]:
    """(instance, subnet) of the test lab for this release and purpose (TEST_LABS). The
    session's own lab of Debian 12 may be moved with FLEET_LAB_TEST_INSTANCE/_SUBNET."""
    instance, subnet = TEST_LABS[suite][purpose]
    if (suite, purpose) == (SUITES[0], "lab"):
        instance = os.environ.get("FLEET_LAB_TEST_INSTANCE", instance)
        subnet = os.environ.get("FLEET_LAB_TEST_SUBNET", subnet)
    return instance, subnet


@dataclass
class RunningLab:
    lab: Lab
    state: dict

    @property
    def instance(self) -> str:
        return self.lab.instance

    @property
    def suite(self) -> str:
        return self.state["suite"]

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


def bring_up(suite: str, purpose: str, hosts_spec: str) -> RunningLab:
    """A test lab of this release and purpose, up (timed: the report's "up" phase)."""
    require_lab()
    instance, subnet = lab_for(suite, purpose)
    lab = Lab(instance=instance, subnet=subnet, suite=suite)
    with phase(suite, f"{instance}: image and boot"):
        try:
            return RunningLab(lab, lab.up(parse_hosts(hosts_spec)))
        except BaseException:
            # the hosts that did boot go too: no teardown follows a fixture that failed
            if os.environ.get("FLEET_LAB_KEEP") != "1":
                lab.down()
            raise


def take_down(running: RunningLab) -> None:
    if os.environ.get("FLEET_LAB_KEEP") != "1":
        with phase(running.suite, f"{running.instance}: down"):
            running.lab.down()


@pytest.fixture(scope="session", params=lab_suites())
def lab(request):
    running = bring_up(request.param, "lab", DEFAULT_HOSTS_SPEC)
    yield running
    take_down(running)


# ---- where the time went --------------------------------------------------------------------

_pending_phases: list[tuple[str, str, float]] = []  # (suite, phase, seconds), this process


class phase:
    """Times a named phase (a lab's boot, its first deploy) for the report at the end; it is
    counted in the test during whose setup or call it ran."""

    def __init__(self, suite: str, name: str):
        self.suite, self.name = suite, name

    def __enter__(self):
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc):
        _pending_phases.append((self.suite, self.name, time.monotonic() - self.started))
        return False


def pytest_collection_modifyitems(items):
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lab)


# A test's release is its lab fixture's parameter, in its id: test_x[bookworm], test_y[1-trixie];
# a module with a lab of its own names it after a "+": test_z[bookworm+rabbit] (own_lab_ids)
LAB_IN_ID = re.compile(rf"\[(?:[^\]]*-)?(({'|'.join(SUITES)})(?:\+\w+)?)(?:-[^\]]*)?\]$")


def release_of(nodeid: str) -> str | None:
    match = LAB_IN_ID.search(nodeid)
    return match[2] if match else None


def lab_of(nodeid: str) -> str | None:
    """The lab a test runs on, as its id names it: "bookworm" (the session's), or
    "bookworm+rabbit" (its module's own)."""
    match = LAB_IN_ID.search(nodeid)
    return match[1] if match else None


def own_lab_ids(purpose: str):
    """ids= for a module fixture that brings up a lab of its own, one a release: its tests
    are scheduled apart from the session lab's, on a worker of their own."""
    return lambda suite: f"{suite}+{purpose}"


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's, where it is installed
def pytest_xdist_make_scheduler(config, log):
    """--dist loadgroup: every test of one lab goes to one worker, in collection order, so the
    lab comes up once there and stays up to its last test: each release's session lab, and
    each module's own lab (own_lab_ids); the other tests are spread as they come.
    (xdist's own loadgroup reads xdist_group marks by renaming node ids, which pytest 9 no
    longer allows: xdist 3.8 sets Node._nodeid, pytest 9 reads Node._id.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ReleaseScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return lab_of(nodeid) or nodeid

    return ReleaseScheduling(config, log)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    # the phases that ended during this test's setup, call or teardown travel with its report
    # (to xdist's controller too: user_properties are sent with it)
    report = yield
    report.user_properties.extend((PHASE, p) for p in _pending_phases)
    _pending_phases.clear()
    return report


class TimeReport:
    """Where the time went, printed at the end: each report's duration summed by test module
    and release, and the named phases within them. Runs where the summary is printed (xdist's
    controller, or the only process)."""

    def __init__(self, workers: int):
        self.started, self.workers = time.monotonic(), workers
        self.modules: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.phases: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report) -> None:
        release = release_of(report.nodeid) or OTHER
        self.modules[report.nodeid.split("::", 1)[0]][release] += report.duration
        for key, (suite, name, seconds) in ((k, v) for k, v in report.user_properties
                                            if k == PHASE):
            # a phase two workers share (the wheel one builds, the other waits for): the longer
            self.phases[f"  {name}"][suite] = max(self.phases[f"  {name}"][suite], seconds)

    def lines(self) -> list[str]:
        columns = [c for c in (*SUITES, OTHER)
                   if any(c in by_column for by_column in self.modules.values())]
        rows = sorted(self.modules.items())
        if self.phases:
            rows += [("of which:", {}), *sorted(self.phases.items())]
        width = max(len(name) for name, _ in rows)
        cell = lambda values, c: f"{values[c]:>10.0f}" if c in values else " " * 10  # noqa: E731
        out = [f"{'seconds':<{width}}" + "".join(f"{c:>10}" for c in columns)]
        out += [f"{name:<{width}}" + "".join(cell(values, c) for c in columns)
                for name, values in rows]
        totals = {c: sum(v.get(c, 0) for v in self.modules.values()) for c in columns}
        out.append(f"{'total':<{width}}" + "".join(cell(totals, c) for c in columns))
        out.append(f"wall clock {time.monotonic() - self.started:.0f} s"
                   + (f" ({self.workers} workers: the labs ran at the same time)"
                      if self.workers else ""))
        return out

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.modules:
            terminalreporter.section("where the time went")
            for line in self.lines():
                terminalreporter.write_line(line)


def pytest_configure(config):
    config.addinivalue_line("markers", "lab: needs the lab (root + systemd-nspawn); brings real "
                            "systemd hosts up")
    if not hasattr(config, "workerinput"):  # xdist's controller, or a run without xdist
        workers = getattr(config.option, "numprocesses", None) or 0
        config.pluginmanager.register(TimeReport(workers), "celery-fleet-time-report")
