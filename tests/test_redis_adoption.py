"""A broker host that already runs Redis keeps every key when we adopt it (issue #11, 8).

Our redis.conf has AOF on; Redis started with AOF on loads only the AOF, so a Redis that kept
its data in dump.rdb would come back empty. Shown here on a real redis-server, then the fix:
files/redis-aof-on switches AOF on live (Redis's documented way), and the role runs it first.
"""

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from celery_fleet import layout
from celery_fleet.redis_state import (REDIS_STATE_COMMAND, adoption_problem,
                                      needs_live_aof_switch, parse_redis_state)
from hosts import planned_host
from rolekit import FRESH, run_role
from roles.redis_broker import redis_broker

SCRIPT = Path(__file__).resolve().parents[1] / "files" / "redis-aof-on"
SWITCH = "Switch the Redis already here to AOF live, keeping its data"
CONFIGURE = "Configure Redis: private address, password, maxmemory, noeviction, AOF"
PASSWORD = "adopt-me-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRedis:
    """A real redis-server on loopback, configured like Debian's (RDB, AOF off) with a
    password, as an operator's broker might be before celery-fleet adopts it."""

    def __init__(self, root: Path):
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.root, self.port = root, free_port()
        self.conf = root / "redis.conf"
        self.write_conf(appendonly="no")

    def write_conf(self, appendonly: str, extra: str = "") -> None:
        self.conf.write_text(
            f'bind 127.0.0.1\nport {self.port}\nrequirepass "{PASSWORD}"\ndir {self.root}\n'
            f"appendonly {appendonly}\nsave 3600 1\ndaemonize yes\n"
            f"pidfile {self.root}/redis.pid\nlogfile {self.root}/redis.log\n{extra}")

    def cli(self, *args: str) -> str:
        return subprocess.run(["redis-cli", "--no-auth-warning", "-a", PASSWORD, "-p",
                               str(self.port), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    def start(self) -> None:
        subprocess.run(["redis-server", str(self.conf)], check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.cli("PING") == "PONG":
                    return
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.1)
        raise AssertionError((self.root / "redis.log").read_text())

    def restart_with_aof(self) -> None:
        """What our deploy does next: its configuration (AOF on) and a restart."""
        self.cli("SHUTDOWN")
        self.write_conf(appendonly="yes")
        self.start()

    def stop(self) -> None:
        subprocess.run(["redis-cli", "--no-auth-warning", "-a", PASSWORD, "-p",
                        str(self.port), "SHUTDOWN", "NOSAVE"], capture_output=True)


@pytest.fixture
def redis(tmp_path):
    server = LocalRedis(tmp_path)
    server.start()
    for i in range(100):
        server.cli("LPUSH", "embeddings", f"task {i}")
    server.cli("SET", "celery-task-meta-1", "result")
    server.cli("SAVE")  # in dump.rdb, as a Redis that ran a while has it
    server.cli("LPUSH", "embeddings", "task queued after the last snapshot")
    yield server
    server.stop()


def test_turning_aof_on_in_the_file_loses_every_key(redis):
    """Why the fix is needed: the naive way, on this Redis, keeps nothing."""
    redis.restart_with_aof()
    assert redis.cli("DBSIZE") == "0"


def test_switching_aof_on_live_first_keeps_every_key(redis):
    out = subprocess.run([str(SCRIPT), str(redis.conf)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("AOF on: 2 key(s)")
    assert "ERR" not in out.stderr and PASSWORD not in out.stdout + out.stderr
    redis.restart_with_aof()
    assert redis.cli("LLEN", "embeddings") == "101"  # the one after the snapshot too
    assert redis.cli("GET", "celery-task-meta-1") == "result"
    again = subprocess.run([str(SCRIPT), str(redis.conf)], capture_output=True, text=True)
    assert (again.returncode, again.stdout.strip()) == (0, "AOF is already on")


def test_a_redis_whose_config_command_is_disabled_is_refused_and_left_alone(redis):
    redis.cli("SHUTDOWN")  # saves
    redis.write_conf(appendonly="no", extra='rename-command CONFIG ""\n')
    redis.start()
    out = subprocess.run([str(SCRIPT), str(redis.conf)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "holds 2 key(s) with AOF off" in out.stderr and "Switch it on yourself" in out.stderr
    assert redis.cli("LLEN", "embeddings") == "101"


def test_the_state_fact_reads_the_configuration_and_the_snapshot(tmp_path):
    conf = tmp_path / "redis.conf"
    (tmp_path / "dump.rdb").write_bytes(b"x" * 42)
    conf.write_text(f'appendonly "no"\ndir {tmp_path}\nrename-command config ""\n')
    command = REDIS_STATE_COMMAND.replace(layout.REDIS_CONF, str(conf))
    lines = subprocess.run(["sh", "-c", command], capture_output=True, text=True).stdout
    state = parse_redis_state(lines.splitlines())
    assert (state["installed"], state["aof"], state["rdb_bytes"]) == (True, False, 42)
    assert state["config_renamed"] is True
    assert "renames CONFIG" in adoption_problem("b", dict(state, running=True))
    assert adoption_problem("b", dict(state, config_renamed=False)) is None
    conf.unlink()
    lines = subprocess.run(["sh", "-c", command], capture_output=True, text=True).stdout
    assert parse_redis_state(lines.splitlines())["installed"] is False


@pytest.mark.parametrize("state, switch", [
    (dict(installed=False, running=False, aof=False, rdb_bytes=0), False),  # a new host
    (dict(installed=True, running=True, aof=False, rdb_bytes=0), True),  # data in memory
    (dict(installed=True, running=False, aof=False, rdb_bytes=4096), True),  # in a snapshot
    (dict(installed=True, running=False, aof=False, rdb_bytes=0), False),  # nothing to keep
    (dict(installed=True, running=True, aof=True, rdb_bytes=4096), False),  # ours already
])
def test_the_switch_runs_only_where_there_is_data_with_aof_off(state, switch):
    assert needs_live_aof_switch(state) is switch


def adopted(running: bool) -> dict:
    return {**FRESH, "celery_fleet.facts.RedisState": {
        "installed": True, "running": running, "aof": False, "rdb_bytes": 4096,
        "config_renamed": False}}


@pytest.mark.parametrize("running", [True, False])
def test_the_role_switches_before_our_configuration_restarts_redis(running):
    names = [op.name for op in run_role(redis_broker, planned_host(roles=("broker",)),
                                        facts=adopted(running))]
    assert names.index(SWITCH) < names.index(CONFIGURE)
    start = "Start the Redis already here with its own configuration (to keep its data)"
    assert (start in names) is not running
    if not running:
        assert names.index(start) < names.index(SWITCH)
    fresh = [op.name for op in run_role(redis_broker, planned_host(roles=("broker",)))]
    assert SWITCH not in fresh  # a host without Redis has nothing to keep
