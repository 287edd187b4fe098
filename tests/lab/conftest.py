"""Shared by the end-to-end tests: one deploy of the test lab per session."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV_EXEC = "/usr/local/lib/celery-fleet/env-exec /etc/celery-fleet/embedding-worker.env"
VENV = "/opt/celery-fleet/venv/bin"


def deploy(lab, inventory="inventory/lab.py") -> dict:
    result = subprocess.run([sys.executable, "-m", "pyinfra", "-y", inventory, "deploy.py"],
                            cwd=ROOT, env=lab.env(), capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    total = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", output)
    assert total, output[-2000:]
    count = lambda text: 0 if text == "-" else int(text)  # noqa: E731
    return {"output": output, "operations": int(total.group(1)),
            "changed": count(total.group(2)), "errors": count(total.group(3)),
            "unchanged": count(total.group(4))}


@pytest.fixture(scope="session")
def deployed(lab):
    return deploy(lab)




def as_service_user(lab, host, command, timeout=60):
    return lab.ssh(host, f"sudo -u celery {ENV_EXEC} {command}", timeout=timeout).stdout
