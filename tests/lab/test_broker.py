"""The broker is not open, and keeps queued tasks through a restart and a crash (issue #5)."""

import shlex
import socket
import time

import pytest

from .conftest import (REDIS, ROOT, VENV, as_service_user, deploy, redis, refused,
                       wait_until_answers)

HOLD = ("from fleet_worker.tasks import worker_info; "
        "[worker_info.apply_async(queue='held-by-test') for _ in range(10)]")


def test_a_machine_outside_the_fleet_cannot_reach_redis(lab, deployed):
    with pytest.raises(OSError):  # this machine sits on the lab bridge but is not in the fleet
        socket.create_connection((lab.ip("broker"), 6379), timeout=3).close()
    lab.ssh("cpu-small", "timeout 3 bash -c '</dev/tcp/broker/6379'")  # a fleet host can


def test_dangerous_commands_are_disabled(lab, deployed):
    for command in ("FLUSHALL", "CONFIG", "KEYS"):
        result = lab.ssh("cpu-small", f"sudo -u celery /usr/local/lib/celery-fleet/env-exec "
                                      f"/etc/celery-fleet/embedding-worker.env {VENV}/python -c "
                                      f"{shlex.quote(REDIS)} {command} '*'", check=False)
        assert result.returncode != 0 and "unknown command" in result.stderr, command


def test_queued_tasks_survive_a_redis_restart_and_a_crash(lab, deployed):
    as_service_user(lab, "cpu-small", f"{VENV}/python -c {shlex.quote(HOLD)}")
    try:
        assert redis(lab, "LLEN", "held-by-test") == "10"
        lab.ssh("broker", "systemctl restart redis-server")
        assert redis(lab, "LLEN", "held-by-test") == "10"
        time.sleep(1.5)  # appendfsync everysec: what is older than a second is on disk
        lab.ssh("broker", "kill -9 $(systemctl show -p MainPID --value redis-server)")
        time.sleep(1)  # systemd notices, Restart=always starts it, Type=notify waits for load
        lab.ssh("broker", "for i in $(seq 100); do systemctl is-active -q redis-server && "
                          "exit 0; sleep 0.2; done; exit 1")
        assert redis(lab, "LLEN", "held-by-test") == "10"
        restarts = lab.ssh("broker", "systemctl show -p NRestarts --value redis-server").stdout
        assert int(restarts) >= 1  # it really crashed and came back
    finally:
        redis(lab, "DEL", "held-by-test", "_kombu.binding.held-by-test",
              "_kombu.binding_permanent.held-by-test")


def test_the_broker_password_is_in_no_log_and_no_world_readable_file(lab, deployed):
    password = (ROOT / ".fleet-secrets" / "broker.redis_password").read_text().strip()
    for host in ("broker", "cpu-small", "gpu-box"):
        journal = lab.ssh(host, "journalctl --no-pager -o cat | grep -cF -- "
                                f"{shlex.quote(password)} || true").stdout.strip()
        assert journal == "0", f"{host}: the password is in the journal"
        readable = lab.ssh(host, "find /etc /opt /var/log /usr/local /home /root /tmp -xdev "
                                 "-type f -perm -o=r -size -2M 2>/dev/null | xargs -r grep -lF "
                                 f"-- {shlex.quote(password)} 2>/dev/null || true").stdout.split()
        assert readable == [], f"{host}: world-readable files hold the password: {readable}"
        secret_files = lab.ssh(host, "grep -rlF -- "
                                     f"{shlex.quote(password)} /etc 2>/dev/null | xargs -r stat "
                                     "-c '%a %U %n'").stdout.splitlines()
        assert secret_files, host  # it is there, only where it must be:
        for line in secret_files:
            mode, owner, path = line.split(" ", 2)
            assert mode in ("600", "640") and owner in ("celery", "redis"), line


ADOPTED = "adopted-by-test"
CONF = "/etc/redis/redis.conf"
# redis-cli on the broker, with the password of the configuration Redis runs with now
BROKER_CLI = (f"REDISCLI_AUTH=$(awk '$1 == \"requirepass\" {{print $2}}' {CONF}) "
              "redis-cli --no-auth-warning")


def broker_cli(lab, commands: str) -> str:
    return lab.ssh("broker", f"{BROKER_CLI} {commands}").stdout.strip()


def push(lab, first: int, count: int) -> None:
    lab.ssh("broker", f"for i in $(seq {first} {first + count - 1}); do echo LPUSH {ADOPTED} "
                      f"task-$i; done | {BROKER_CLI} > /dev/null")


def as_before_celery_fleet(lab, keep_renames: bool) -> None:
    """The broker's Redis as an operator may have it before adopting it: AOF off (Debian's
    default), its data in memory and in dump.rdb, a password of its own."""
    renames = "" if keep_renames else "-e '/^rename-command/d' "
    lab.ssh("broker", f"sed -i -e 's/^appendonly yes/appendonly no/' {renames}{CONF} && "
                      "systemctl stop redis-server && rm -rf /var/lib/redis/appendonlydir && "
                      "systemctl start redis-server")


def test_adopting_a_redis_that_holds_data_keeps_every_key(lab, deployed):
    as_before_celery_fleet(lab, keep_renames=True)
    try:
        push(lab, 1, 100)
        broker_cli(lab, "SAVE")
        # its CONFIG command is disabled: it cannot be switched live, so the run stops before
        # any host is changed, saying what to do
        output = refused(lab)
        assert "host 'broker': its Redis keeps its data with AOF off, and its configuration " \
               "renames CONFIG" in output
        assert lab.ssh("broker", f"grep -c '^appendonly no' {CONF}").stdout.strip() == "1"
        assert broker_cli(lab, f"LLEN {ADOPTED}") == "100"

        as_before_celery_fleet(lab, keep_renames=False)  # CONFIG allowed, as Debian ships it
        push(lab, 101, 20)  # in memory only: no snapshot has them
        result = deploy(lab)
        assert "Switch the Redis already here to AOF live" in result["output"]
        assert redis(lab, "LLEN", ADOPTED) == "120"
        lab.ssh("broker", "systemctl restart redis-server")  # from our configuration's AOF
        assert redis(lab, "LLEN", ADOPTED) == "120"
        assert redis(lab, "LINDEX", ADOPTED, "-1") == "b'task-1'"  # the oldest, first in
    finally:
        if lab.ssh("broker", f"grep -c '^appendonly no' {CONF} || true").stdout.strip() != "0":
            as_before_celery_fleet(lab, keep_renames=False)
            deploy(lab)
        redis(lab, "DEL", ADOPTED)
        wait_for_the_fleet(lab)  # Redis restarted: the next test needs every worker back


def wait_for_the_fleet(lab) -> None:
    for host, nodes in (("cpu-small", ("embedding-1", "llm-cpu")),
                        ("gpu-box", ("embedding-1", "embedding-2", "llm-gpu0"))):
        for node in nodes:
            wait_until_answers(lab, host, f"{node}@{host}")
