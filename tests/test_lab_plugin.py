"""The lab plugin's scheduling and report (celery_fleet/lab/pytest_plugin.py), on a throwaway
test suite run by pytester under pytest-xdist: every test of one lab on one worker (the lab
stays up from its first test to its last), and where the time went, by release."""

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
# a module with a lab of its own (as tests/lab/test_rabbitmq.py has)
OWN_LAB = """
import time
import pytest
from celery_fleet.lab.pytest_plugin import own_lab_ids

pytestmark = pytest.mark.lab

@pytest.fixture(scope="module", params=["bookworm", "trixie"], ids=own_lab_ids("solo"))
def solo(request):
    return request.param

@pytest.mark.parametrize("n", range(3))
def test_on_its_own_lab(solo, n):
    time.sleep(0.05)
"""


def test_each_lab_runs_on_one_worker_and_the_report_says_where_the_time_went(pytester):
    pytester.makepyfile(test_fake_labs=SUITE, test_own_lab=OWN_LAB)
    result = pytester.runpytest("-p", "celery_fleet.lab.pytest_plugin", "-p", "xdist",
                                "-n", "5", "--dist", "loadgroup", "-v")
    result.assert_outcomes(passed=15)
    output = result.stdout.str()
    workers = {}
    for worker, lab in re.findall(r"\[(gw\d)\] \[\s*\d+%\] PASSED \S+\[([\w+]+)-\d\]", output):
        workers.setdefault(lab, set()).add(worker)
    assert workers.keys() == {"bookworm", "trixie", "bookworm+solo", "trixie+solo"}, output
    assert all(len(w) == 1 for w in workers.values()), workers  # one worker a lab
    assert len(set.union(*workers.values())) == 4, workers  # and not the same one

    table = output[output.index("where the time went"):].splitlines()[2:]
    assert re.match(r"seconds\s+bookworm\s+trixie\s+other$", table[0]), table
    assert re.match(r"wall clock \d+ s \(5 workers: ", table[-2]), table
    boot = next(line for line in table if "image and boot" in line)
    # each release's boot, in its own column, once (0.2 s: rounded to 0)
    assert re.match(r"\s+bookworm-lab: image and boot\s+0\s*$", boot) or \
        "trixie-lab: image and boot" in boot, table
    assert len([line for line in table if "image and boot" in line]) == 2, table
    module = next(line for line in table if line.startswith("test_fake_labs.py"))
    assert len(module.split()) == 4, module  # seconds under bookworm, trixie and other
    own = next(line for line in table if line.startswith("test_own_lab.py"))
    assert len(own.split()) == 3, own  # its own labs' seconds under their releases
