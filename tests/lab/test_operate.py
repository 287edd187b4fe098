"""After the deploy (issue #6): memory watch on real systemd hosts, `fleet status`."""

import json
import time

from .conftest import FAKE, VENV, as_service_user, collect

SUBMIT = r"""
import json
from fleet_worker.tasks import embed
print(json.dumps([embed.delay([f"memory {i}"]).id for i in range(COUNT)]))
"""


def unit_show(lab, host: str, unit: str, *properties: str) -> dict:
    out = lab.ssh(host, f"systemctl show {unit} " + " ".join(f"-p {p}" for p in properties))
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def test_a_worker_above_its_memory_limit_restarts_warm_and_loses_no_task(lab, deployed):
    host, unit = "cpu-small", "celery-embedding-worker@1.service"
    dropin = f"/run/systemd/system/{unit}.d"
    # a limit any worker is above: the watch must restart it once it ran tasks, not before
    lab.ssh(host, f"mkdir -p {dropin} && printf 'FLEET_MEMORY_RECYCLE_MB=20\\n"
                  f"FLEET_MEMORY_CHECK_S=1\\n' > /run/fleet-test-memory.env && printf "
                  f"'[Service]\\nEnvironmentFile=/run/fleet-test-memory.env\\n' > "
                  f"{dropin}/zz-test-memory.conf && systemctl daemon-reload && "
                  f"systemctl restart {unit}")
    try:
        before = unit_show(lab, host, unit, "NRestarts", "MainPID")
        time.sleep(4)
        assert unit_show(lab, host, unit, "MainPID") == {"MainPID": before["MainPID"]}
        script = SUBMIT.replace("COUNT", "200")
        ids = json.loads(as_service_user(lab, host, f"{VENV}/python -c '{script}'").strip()
                         .splitlines()[-1])
        deadline = time.monotonic() + 60
        while unit_show(lab, host, unit, "NRestarts")["NRestarts"] == before["NRestarts"]:
            assert time.monotonic() < deadline, "the worker was not restarted"
            time.sleep(0.5)
        assert collect(lab, ids, timeout=120) == [[FAKE["vector_of"](f"memory {i}")]
                                                  for i in range(200)]
        log = lab.ssh(host, f"journalctl -u {unit} --no-pager -o cat -n 300").stdout
        assert "above 20 MB after" in log and "warm restart" in log
        status = unit_show(lab, host, unit, "ActiveState", "ExecMainStatus")
        assert status["ActiveState"] == "active"
    finally:
        lab.ssh(host, f"rm -rf {dropin} /run/fleet-test-memory.env && systemctl daemon-reload "
                      f"&& systemctl restart {unit}")
