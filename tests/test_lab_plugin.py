"""The lab plugin's scheduling and report (celery_fleet/lab/pytest_plugin.py), on a throwaway
test suite run by pytester under pytest-xdist: every test of one release on one worker (its
labs stay up from its first test to its last), and where the time went, by release."""

import re

pytest_plugins = ["pytester"]

SUITE = """
import time
import pytest
from celery_fleet.lab.pytest_plugin import phase

pytestmark = pytest.mark.lab

@pytest.fixture(scope="session", params=["bookworm", "trixie"])
def lab(request):
    with phase(request.param, f"{request.param}-lab: image and boot"):
        time.sleep(0.2)
    return request.param

@pytest.mark.parametrize("n", range(4))
def test_on_the_lab(lab, n):
    time.sleep(0.05)

def test_pure():
    pass
"""


def test_each_release_runs_on_one_worker_and_the_report_says_where_the_time_went(pytester):
    pytester.makepyfile(test_fake_labs=SUITE)
    result = pytester.runpytest("-p", "celery_fleet.lab.pytest_plugin", "-p", "xdist",
                                "-n", "2", "--dist", "loadgroup", "-v")
    result.assert_outcomes(passed=9)
    output = result.stdout.str()
    workers = {}
    for worker, suite in re.findall(r"\[(gw\d)\] \[\s*\d+%\] PASSED \S+\[(\w+)-\d\]", output):
        workers.setdefault(suite, set()).add(worker)
    assert workers.keys() == {"bookworm", "trixie"}, output
    assert all(len(w) == 1 for w in workers.values()) and workers["bookworm"] != \
        workers["trixie"], workers  # one worker each, not the same one

    table = output[output.index("where the time went"):].splitlines()[2:]
    assert re.match(r"seconds\s+bookworm\s+trixie\s+pure$", table[0]), table
    assert re.match(r"wall clock \d+ s \(2 workers: ", table[-2]), table
    boot = next(line for line in table if "image and boot" in line)
    # each release's boot, in its own column, once (0.2 s: rounded to 0)
    assert re.match(r"\s+bookworm-lab: image and boot\s+0\s*$", boot) or \
        "trixie-lab: image and boot" in boot, table
    assert len([line for line in table if "image and boot" in line]) == 2, table
    module = next(line for line in table if line.startswith("test_fake_labs.py"))
    assert len(module.split()) == 4, module  # seconds under bookworm, trixie and pure
