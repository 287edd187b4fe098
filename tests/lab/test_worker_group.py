"""`systemctl status celery-worker`, typed so on a worker host, shows its workers and whether
they run; `systemctl restart|stop|start celery-worker` acts on all of them (issue #11, 3)."""

import time

from .conftest import wait_until_answers

HOST = "cpu-small"
WORKERS = ("celery-embedding-worker@1.service", "celery-llm-worker@cpu.service")


def status_shows(lab, *lines: str, timeout: float = 30) -> str:
    """systemctl status celery-worker, once it shows every line (worker-states polls)."""
    deadline = time.monotonic() + timeout
    while True:
        out = lab.ssh(HOST, "systemctl status celery-worker --no-pager -n 20", check=False).stdout
        if all(line in out for line in lines) or time.monotonic() > deadline:
            return out
        time.sleep(1)


def main_pids(lab) -> dict:
    return {unit: lab.ssh(HOST, f"systemctl show -p MainPID --value {unit}").stdout.strip()
            for unit in WORKERS}


def wait_for(condition, timeout: float = 120) -> bool:
    """systemctl returns once celery-worker itself restarted or stopped; the workers' warm
    shutdowns (propagated by PartOf=) finish on their own time."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def test_systemctl_status_celery_worker_shows_the_hosts_workers(lab, deployed):
    out = status_shows(lab, *(f"{unit}: active (running)" for unit in WORKERS))
    assert "celery-worker.service - celery-fleet workers of this host: " \
           "celery-embedding-worker@1 threads x8, celery-llm-worker@cpu prefork x1" in out, out
    for unit in WORKERS:
        assert f"{unit}: active (running)" in out, out


def test_stop_start_and_restart_celery_worker_act_on_every_worker(lab, deployed):
    before = main_pids(lab)
    try:
        lab.ssh(HOST, "systemctl restart celery-worker")  # each: warm shutdown, then again
        assert wait_for(lambda: all(pid not in ("0", before[unit])
                                    for unit, pid in main_pids(lab).items())), main_pids(lab)
        lab.ssh(HOST, "systemctl stop celery-worker")
        assert wait_for(lambda: lab.ssh(HOST, "systemctl is-active " + " ".join(WORKERS),
                                        check=False).stdout.split() == ["inactive"] * 2)
    finally:
        lab.ssh(HOST, "systemctl start celery-worker")
        for node in ("embedding-1", "llm-cpu"):
            wait_until_answers(lab, HOST, f"{node}@{HOST}")
    out = status_shows(lab, *(f"{unit}: active (running)" for unit in WORKERS))
    assert all(f"{unit}: active (running)" in out for unit in WORKERS), out
