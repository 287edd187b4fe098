"""`fleet plan` for a host described on the command line."""

import json

from celery_fleet import cli


def plan_json(capsys, *args):
    assert cli.main(["plan", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_plan_json_for_the_lab_hosts(capsys):
    small = plan_json(capsys, "--ram-mb", "4096", "--cores", "1")
    assert small["embedding"]["pool"] == "threads" and small["embedding"]["concurrency"] == 8
    assert small["embedding"]["processes"] == 1 and small["embedding"]["memory_max_mb"] == 4096
    assert small["embedding"]["max_tasks_per_child"] == 100
    assert (small["llm"]["pool"], small["llm"]["concurrency"], small["llm"]["instances"],
            small["llm"]["threads"]) == ("prefork", 1, 1, 1)
    assert small["redis"]["maxmemory_mb"] == 1024
    gpu = plan_json(capsys, "--ram-mb", "16384", "--cores", "2", "--gpu", "24576")
    assert (gpu["llm"]["pool"], gpu["llm"]["concurrency"], gpu["llm"]["instances"]) == (
        "threads", 4, 1)


def test_set_overrides_like_inventory_data(capsys):
    out = plan_json(capsys, "--ram-mb", "16384", "--cores", "8",
                    "--set", "embedding_rate_limit_per_min=3000",
                    "--set", "embedding_latency_ms=229", "--set", "llm_pool=solo",
                    "--set", "gpus=[24576, 24576]", "--roles", "embedding,llm")
    assert out["embedding"]["concurrency"] == 13
    assert out["llm"]["pool"] == "solo" and out["llm"]["instances"] == 2
    assert "redis" not in out


def test_the_text_plan_gives_the_reason_for_each_number(capsys):
    assert cli.main(["plan", "--ram-mb", "8192", "--cores", "2"]) == 0
    text = capsys.readouterr().out
    assert "pool threads, concurrency 16" in text and "~8 GB tier" in text
    assert "one generation at a time is the fastest generation" in text
    assert "maxmemory-policy noeviction" in text


def test_bad_settings_exit_2_with_the_key_and_a_suggestion(capsys):
    assert cli.main(["plan", "--ram-mb", "4096", "--cores", "1",
                     "--set", "embeding_concurrency=8"]) == 2
    assert "did you mean embedding_concurrency?" in capsys.readouterr().err
    assert cli.main(["plan", "--ram-mb", "4096", "--cores", "1",
                     "--set", "embedding_concurrency=-3"]) == 2
    assert "embedding_concurrency=-3 is not accepted: a whole number >= 1" in \
        capsys.readouterr().err
    assert cli.main(["plan", "--ram-mb", "4096", "--cores", "1", "--set", "llm_pool=gevent"]) == 2
    assert "llm_pool='gevent'" in capsys.readouterr().err


UNREACHABLE = """
_nobody = {"ssh_port": 1, "ssh_connect_retries": 0}  # loopback, nothing listens: refused at once
brokers = [("ghost-broker", dict(_nobody, ssh_hostname="127.0.0.1"))]
embedding_workers = [("ghost-worker", dict(_nobody, ssh_hostname="127.0.0.2"))]
retired = [("old-worker", dict(_nobody, ssh_hostname="127.0.0.3"))]
"""


def test_unreachable_hosts_are_one_line_each_never_a_traceback(tmp_path):
    import subprocess
    import sys

    inventory = tmp_path / "unreachable.py"
    inventory.write_text(UNREACHABLE)
    plan = subprocess.run([sys.executable, "-m", "celery_fleet.cli", "plan", str(inventory)],
                          capture_output=True, text=True, timeout=120)
    assert plan.returncode == 2 and "Traceback" not in plan.stderr, plan.stderr
    assert [line for line in plan.stderr.splitlines() if line.startswith("fleet:")] == [
        f"fleet: host {name!r}: cannot be reached over SSH: not planned (its facts are read "
        "on the host)" for name in ("ghost-broker", "ghost-worker")]
    assert "old-worker: retired: the deploy removes every unit, file and user of celery-fleet " \
        "from it" in plan.stdout
    status = subprocess.run([sys.executable, "-m", "celery_fleet.cli", "status", str(inventory)],
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 2 and "Traceback" not in status.stderr, status.stderr
    assert "ghost-broker: unreachable over SSH" in status.stdout
    assert "ghost-worker: unreachable over SSH" in status.stdout
