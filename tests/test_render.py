"""Rendered files: units pass `systemd-analyze verify`, .env files parse the same for systemd
and env-exec, redis.conf carries the plan."""

import importlib.util
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from celery_fleet import layout, render
from celery_fleet.checks import compare_stats
from celery_fleet.facts import parse_worker_units
from celery_fleet.render import env_quote
from celery_fleet.settings import resolve
from celery_fleet.wheel import source_digest

from hosts import BROKER_URL, planned_host as deploy_of

ROOT = Path(__file__).resolve().parents[1]


def env_exec_module():
    spec = importlib.util.spec_from_loader("env_exec", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec((ROOT / "files" / "env-exec").read_text(), module.__dict__)
    return module


@pytest.fixture
def unit_root(tmp_path):
    """An install_dir with an executable `celery`, as verify checks ExecStart= exists."""
    celery = tmp_path / "venv" / "bin" / "celery"
    celery.parent.mkdir(parents=True)
    celery.write_text("#!/bin/sh\n")
    celery.chmod(0o755)
    return tmp_path


def verify(unit_path: Path) -> str:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    result = subprocess.run(["systemd-analyze", "verify", str(unit_path)], capture_output=True,
                            text=True, cwd=unit_path.parent)
    return (result.stdout + result.stderr).strip() + ("" if result.returncode == 0 else
                                                      f" (exit {result.returncode})")


@pytest.mark.parametrize("shape", [
    dict(ram_mb=4096, cores=1), dict(ram_mb=65536, cores=16, gpus=(81920, 81920)),
    dict(ram_mb=16384, cores=4, data={"embedding_pool": "prefork"}),
])
def test_rendered_units_pass_systemd_analyze_verify(unit_root, shape):
    shape = dict(shape)
    data = dict(shape.pop("data", {}), install_dir=str(unit_root))
    d = deploy_of(**shape, data=data)
    units = {layout.embedding_unit_name("1"): render.render(
        f"{layout.EMBEDDING_UNIT}.j2", render.embedding_unit(d))}
    for instance in d.plan.llm.instances:
        units[layout.llm_unit_name(instance.name)] = render.render(
            f"{layout.LLM_UNIT}.j2", render.llm_unit(d))
    for name, text in units.items():
        path = unit_root / name
        path.write_text(text)
        assert verify(path) == "", f"{name}:\n{text}"


@pytest.mark.parametrize("gpu", [False, True])
def test_the_sandbox_drop_in_passes_verify(unit_root, gpu):
    d = deploy_of(data={"install_dir": str(unit_root)})
    unit = unit_root / "celery-llm-worker@gpu0.service"
    unit.write_text(render.render(f"{layout.LLM_UNIT}.j2", render.llm_unit(d)))
    dropin = unit_root / "celery-llm-worker@gpu0.service.d"
    dropin.mkdir()
    text = render.render("hardening.conf.j2", render.hardening(layout.LLM_UNIT, gpu=gpu))
    (dropin / "hardening.conf").write_text(text)
    assert verify(unit) == ""
    assert ("DeviceAllow=char-nvidia-frontend rw" in text) is gpu
    assert ("PrivateDevices=yes" in text) is not gpu


def test_verify_would_catch_a_broken_unit(unit_root):
    """The check above can fail: a misspelt key is reported."""
    text = render.render(f"{layout.EMBEDDING_UNIT}.j2", render.embedding_unit(
        deploy_of(data={"install_dir": str(unit_root)}))).replace("MemoryMax=", "MemoryMx=")
    path = unit_root / "broken@1.service"
    path.write_text(text)
    assert "Unknown key 'MemoryMx'" in verify(path)


def test_embedding_unit_carries_the_plan():
    d = deploy_of(ram_mb=8192, cores=2)
    text = render.render(f"{layout.EMBEDDING_UNIT}.j2", render.embedding_unit(d))
    assert "--pool=threads --concurrency=16 --queues=embeddings" in text
    assert "--hostname=embedding-%i@%H" in text
    assert "MemoryMax=6144M" in text and "KillMode=mixed" in text
    assert "TimeoutStopSec=360" in text  # the longest embedding task (300 s) plus a margin
    assert "--max-tasks-per-child" not in text  # threads have no children to recycle
    assert BROKER_URL not in text  # units are world-readable: no secrets
    prefork = deploy_of(data={"embedding_pool": "prefork"})
    assert "--max-tasks-per-child=100" in render.render(
        f"{layout.EMBEDDING_UNIT}.j2", render.embedding_unit(prefork))


def test_units_recycle_a_worker_warm_before_the_kernel_kills_it():
    from fleet_worker.memory import EXIT_RECYCLE

    assert layout.EXIT_RECYCLE == EXIT_RECYCLE  # the unit restarts on what the app exits with
    in_process = deploy_of(ram_mb=8192, cores=2)
    text = render.render(f"{layout.EMBEDDING_UNIT}.j2", render.embedding_unit(in_process))
    assert "RestartForceExitStatus=75" in text
    assert "MemoryHigh=5529M" in text and "MemoryMax=6144M" in text
    assert "--max-memory-per-child" not in text  # one process: the app's memory watch
    env = render.render("embedding-worker.env.j2", render.embedding_env(in_process))
    assert 'FLEET_MEMORY_RECYCLE_MB="4915"' in env
    prefork = deploy_of(ram_mb=8192, cores=4, data={"embedding_pool": "prefork",
                                                     "embedding_concurrency": 4})
    text = render.render(f"{layout.EMBEDDING_UNIT}.j2", render.embedding_unit(prefork))
    assert f"--max-memory-per-child={4915 * 1024 // 4}" in text  # each child's share, in KiB
    llm = render.render(layout.LLM_UNIT + ".j2", render.llm_unit(in_process))
    assert "--max-memory-per-child=838656" in llm  # prefork 1 on CPU: 819 MB
    assert "MemoryMax=1024M" in llm and "RestartForceExitStatus=75" in llm
    gpu = deploy_of(ram_mb=65536, cores=8, gpus=(24576,))
    assert "--max-memory-per-child" not in render.render(layout.LLM_UNIT + ".j2",
                                                         render.llm_unit(gpu))
    env = render.render("llm-worker.env.j2", render.llm_env(gpu))
    assert 'FLEET_MEMORY_RECYCLE_MB="819"' in env


def test_llm_instances_are_pinned_to_their_gpu():
    d = deploy_of(ram_mb=65536, cores=8, gpus=(24576, 24576))
    for index, instance in enumerate(d.plan.llm.instances):
        text = render.render("llm-worker@.env.j2", render.llm_instance_env(d, instance))
        assert f"CUDA_VISIBLE_DEVICES={index}\n" in text
        assert 'FLEET_CONCURRENCY="4"' in text and 'OMP_NUM_THREADS="4"' in text
    cpu = deploy_of(ram_mb=8192, cores=4)
    text = render.render("llm-worker@.env.j2",
                         render.llm_instance_env(cpu, cpu.plan.llm.instances[0]))
    assert 'CUDA_VISIBLE_DEVICES=""' in text and 'FLEET_CONCURRENCY="1"' in text


def test_env_values_read_back_the_same_through_env_exec(tmp_path):
    tricky = 'k-"quoted" \\back$HOME`x`'
    d = deploy_of(data={"embedding_api_key": tricky, "embedding_api_url": "http://e:8000/v1"})
    path = tmp_path / "embedding-worker.env"
    path.write_text(render.render("embedding-worker.env.j2", render.embedding_env(d)))
    values = env_exec_module().read_env_file(str(path))
    assert values["EMBEDDING_API_KEY"] == tricky
    assert values["CELERY_BROKER_URL"] == values["CELERY_RESULT_BACKEND"] == BROKER_URL
    assert values["FLEET_CONCURRENCY"] == "8" and values["FLEET_POOL"] == "threads"


def test_redis_conf_carries_the_plan_and_is_closed():
    d = replace(deploy_of(ram_mb=8192, cores=2, roles=("broker",)), private_address="10.0.0.5")
    text = render.render("redis.conf.j2", render.redis_conf(d))
    assert "bind 127.0.0.1 10.0.0.5\n" in text
    assert "maxmemory 4096mb\n" in text and "maxmemory-policy noeviction\n" in text
    assert "requirepass s3cr3t-Passw0rd_xyz\n" in text and "protected-mode yes" in text
    assert "appendonly yes" in text
    assert 'rename-command FLUSHALL ""' in text and 'rename-command CONFIG ""' in text


def test_redis_firewall_lets_only_the_fleet_in():
    d = replace(deploy_of(roles=("broker",)), fleet_addresses=("10.0.0.9", "10.0.0.7", "10.0.0.9"))
    text = render.render("redis-firewall.nft.j2", render.redis_firewall(d))
    assert "tcp dport 6379 ip saddr { 10.0.0.7, 10.0.0.9, 127.0.0.1 } accept" in text
    assert "tcp dport 6379 counter drop" in text


def test_flower_is_private_protected_and_its_secrets_stay_in_its_env_file(unit_root):
    d = deploy_of(data={"install_dir": str(unit_root), "flower": True,
                        "flower_allowed_networks": ["192.168.1.0/24"]})
    d = replace(d, flower_password="pa55-word-0123456789")
    (unit_root / "flower-venv" / "bin").mkdir(parents=True)
    (unit_root / "flower-venv" / "bin" / "celery").symlink_to(unit_root / "venv/bin/celery")
    unit = render.render(f"{layout.FLOWER_UNIT}.j2", render.flower_unit(d))
    assert "--address=10.0.0.9 --port=5555" in unit and "DynamicUser=yes" in unit
    assert "pa55" not in unit and "s3cr3t" not in unit  # the unit is world-readable
    (unit_root / layout.FLOWER_UNIT).write_text(unit)
    assert verify(unit_root / layout.FLOWER_UNIT) == ""
    env = render.render("flower.env.j2", render.flower_env(d))
    assert 'FLOWER_BASIC_AUTH="flower:pa55-word-0123456789"' in env
    assert f'BROKER_URL="{BROKER_URL}"' in env
    rules = render.render("redis-firewall.nft.j2", render.redis_firewall(d))
    assert ("tcp dport 5555 ip saddr { 10.0.0.9, 127.0.0.1, 192.168.1.0/24 } accept"
            in rules)
    assert "tcp dport 5555 counter drop" in rules
    no_flower = render.render("redis-firewall.nft.j2",
                              render.redis_firewall(deploy_of()))
    assert "5555" not in no_flower


def test_workers_send_task_events_only_for_flower():
    quiet = render.render("embedding-worker.env.j2", render.embedding_env(deploy_of()))
    assert 'FLEET_TASK_EVENTS="0"' in quiet
    d = replace(deploy_of(), task_events=True)
    assert 'FLEET_TASK_EVENTS="1"' in render.render("llm-worker.env.j2", render.llm_env(d))


def test_one_visibility_timeout_covers_the_longest_wait_and_run_in_the_fleet():
    from celery_fleet.sizing import VISIBILITY_MARGIN_S, visibility_timeout
    defaults = resolve("h", {})
    # an embedding message waits behind 3 others per slot (prefetch 4), then runs: 4 x 300 s
    assert visibility_timeout([defaults]) == max(4 * 300, 1800) + VISIBILITY_MARGIN_S
    slow = resolve("h", {"embedding_task_time_limit_s": 900})
    assert visibility_timeout([defaults, slow]) == 4 * 900 + VISIBILITY_MARGIN_S
    d = deploy_of(roles=("embedding", "llm"))
    text = render.render("llm-worker.env.j2", render.llm_env(d))
    assert 'FLEET_VISIBILITY_TIMEOUT_S="2400"' in text and 'FLEET_TASK_TIME_LIMIT_S="1800"' in text


def test_env_quote_is_json():
    assert env_quote('a"b') == json.dumps('a"b')


STATS = {"embedding-1@cpu-small": {"pool": {"implementation": "celery.concurrency.thread:TaskPool",
                                            "max-concurrency": 8}},
         "llm-cpu@cpu-small": {"pool": {"implementation": "celery.concurrency.prefork:TaskPool",
                                        "max-concurrency": 1}}}


def test_worker_check_accepts_workers_running_as_planned():
    d = deploy_of(roles=("embedding", "llm"))
    assert compare_stats(layout.planned_workers(d.plan), "cpu-small", json.dumps(STATS)) == []


def test_worker_check_names_each_difference():
    d = deploy_of(ram_mb=8192, cores=2, roles=("embedding", "llm"))  # plans threads x16
    stats = dict(STATS)
    del stats["llm-cpu@cpu-small"]
    problems = compare_stats(layout.planned_workers(d.plan), "cpu-small", json.dumps(stats))
    assert problems == [
        "celery-embedding-worker@1.service: runs threads x8, planned threads x16",
        "celery-llm-worker@cpu.service: worker llm-cpu@cpu-small does not answer"]
    assert "not JSON" in compare_stats(layout.planned_workers(d.plan), "h", "Error: timeout")[0]


def test_worker_units_fact_lists_instances_only():
    lines = ["celery-embedding-worker@1.service", "celery-llm-worker@gpu0.service",
             "celery-embedding-worker@1.service", "celery-llm-worker@.service", "ssh.service"]
    assert parse_worker_units(lines) == ["celery-embedding-worker@1.service",
                                         "celery-llm-worker@gpu0.service"]


def test_worker_source_digest_ignores_build_leftovers(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    before = source_digest(tmp_path)
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "junk").write_text("junk")
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.pyc").write_text("junk")
    assert source_digest(tmp_path) == before
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert source_digest(tmp_path) != before


def test_an_own_application_gets_its_queues_and_celerys_own_variables():
    d = deploy_of(data={"embedding_queues": ["tj-vectors", "tj-bulk"],
                        "llm_queues": ["tj-completions"], "worker_app_module": "textjobs.celery"})
    unit = render.render(f"{layout.EMBEDDING_UNIT}.j2", render.embedding_unit(d))
    assert "-A textjobs.celery worker" in unit and "--queues=tj-vectors,tj-bulk " in unit
    assert "--queues=tj-completions " in render.render(f"{layout.LLM_UNIT}.j2", render.llm_unit(d))
    env = render.render("llm-worker.env.j2", render.llm_env(d))
    assert f'CELERY_BROKER_URL="{BROKER_URL}"' in env and "CELERY_RESULT_BACKEND=" in env


def test_the_broker_admits_the_networks_it_is_told_to():
    d = replace(deploy_of(roles=("broker",), data={"broker_allowed_networks": ["192.168.7.0/24"]}),
                fleet_addresses=("10.0.0.9", "10.0.0.30"))
    text = render.render("redis-firewall.nft.j2", render.redis_firewall(d))
    assert "ip saddr { 10.0.0.30, 10.0.0.9, 127.0.0.1, 192.168.7.0/24 } accept" in text


def test_the_workers_of_a_host_are_one_service_that_passes_verify(unit_root):
    d = deploy_of(ram_mb=65536, cores=8, gpus=(24576,), data={"install_dir": str(unit_root)})
    group = render.render(f"{layout.WORKER_GROUP_UNIT}.j2", render.worker_group(d))
    units = [w.unit for w in layout.planned_workers(d.plan)]
    assert f"Wants={' '.join(units)}\n" in group and len(units) == 3
    assert ("Description=celery-fleet workers of this host: celery-embedding-worker@1 threads "
            "x16, celery-embedding-worker@2 threads x16, celery-llm-worker@gpu0 threads x4") in group
    (unit_root / layout.WORKER_GROUP_UNIT).write_text(group)
    for unit in units:  # the units it wants, and each is PartOf= it
        text = render.render(f"{layout.LLM_UNIT if 'llm' in unit else layout.EMBEDDING_UNIT}.j2",
                             render.llm_unit(d) if "llm" in unit else render.embedding_unit(d))
        assert "PartOf=celery-worker.service\n" in text
        (unit_root / unit).write_text(text)
    worker_states = unit_root / "worker-states"
    worker_states.write_text("#!/bin/sh\n")
    worker_states.chmod(0o755)
    (unit_root / layout.WORKER_GROUP_UNIT).write_text(group.replace(layout.WORKER_STATES,
                                                                    str(worker_states)))
    assert verify(unit_root / layout.WORKER_GROUP_UNIT) == ""
    # the inference servers the workers call are shown and started with them
    served = _server_host(unit_root, "llamacpp")
    group = render.render(f"{layout.WORKER_GROUP_UNIT}.j2", render.worker_group(served))
    assert ("Wants=celery-llm-worker@cpu.service celery-fleet-llm-server@cpu.service\n"
            in group)
    assert "celery-llm-worker@cpu prefork x1; llamacpp server(s) cpu\n" in group


def _server_host(unit_root, server: str):
    gpus = (81920,) if server == "vllm" else ()
    return deploy_of(ram_mb=16384, cores=4, gpus=gpus, model_mb=600, data={
        "install_dir": str(unit_root), "llm_model_host_path": "/srv/models/m.gguf"},
        roles=("llm",))


@pytest.mark.parametrize("server", ["llamacpp", "vllm"])
def test_the_inference_server_unit_passes_verify(unit_root, server):
    d = _server_host(unit_root, server)
    assert d.plan.llm.server.server == server
    venv = Path(layout.llm_server_venv(str(unit_root)))
    for program in ("python", "vllm"):  # verify checks ExecStart='s program exists
        (venv / "bin").mkdir(parents=True, exist_ok=True)
        (venv / "bin" / program).write_text("#!/bin/sh\n")
        (venv / "bin" / program).chmod(0o755)
    unit = unit_root / layout.llm_server_unit_name(d.plan.llm.server.instances[0].name)
    unit.write_text(render.render(f"{layout.LLM_SERVER_UNIT}.j2", render.llm_server_unit(d)))
    assert verify(unit) == ""
    assert "\nMemoryHigh=" not in unit.read_text()  # the weights are its working set


def _ready_command(unit_root, python: str) -> list[str]:
    """The unit's ExecStartPost= as systemd hands it to the shell: $$ becomes $, and the
    server's Python is python."""
    command = render.llm_server_ready_command(_server_host(unit_root, "llamacpp"))
    venv_python = f"{layout.llm_server_venv(str(unit_root))}/bin/python"
    script = command.removeprefix("/bin/sh -c '").removesuffix("'")
    return ["/bin/sh", "-c", script.replace("$$", "$").replace(venv_python, python)]


def test_the_server_counts_as_started_once_it_answers(unit_root):
    """ExecStartPost= polls /v1/models: it returns once a server answers there, and gives up
    as soon as the server's process is gone (not at TimeoutStartSec, 15 minutes later)."""
    import socket
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = _ready_command(unit_root, sys.executable)
    server = subprocess.Popen(  # answers only after 2 s, like a server loading its model
        [sys.executable, "-c", "import time, http.server as h; time.sleep(2); "
         f"h.HTTPServer(('127.0.0.1', {port}), h.SimpleHTTPRequestHandler).serve_forever()"],
        cwd=unit_root)
    (unit_root / "v1").mkdir()
    (unit_root / "v1" / "models").write_text("{}")
    try:
        started = time.monotonic()
        waited = subprocess.run(command, env={"FLEET_SERVER_PORT": str(port),
                                              "MAINPID": str(server.pid)}, timeout=60)
        assert waited.returncode == 0
        assert time.monotonic() - started >= 1.5  # it waited for the answer
    finally:
        server.kill()
        server.wait()
    gone = subprocess.run(command, env={"FLEET_SERVER_PORT": str(port),
                                        "MAINPID": str(server.pid)}, timeout=30)
    assert gone.returncode == 1


# ---- broker: rabbitmq (issue #14) ---------------------------------------------------------

def rabbit_host(roles=("broker",), address="10.0.0.6"):
    from celery_fleet.fleetplan import RabbitmqCluster

    cluster = RabbitmqCluster(("10.0.0.5", "10.0.0.6", "10.0.0.7"), 5672, "rabbit-pass-0123456",
                              "COOKIE0123456789")
    return replace(deploy_of(ram_mb=8192, cores=2, roles=roles, data={"broker": "rabbitmq"}),
                   private_address=address, rabbitmq=cluster, runs_redis=False,
                   fleet_addresses=("10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.20"))


def test_rabbitmq_conf_binds_the_private_address_and_names_the_cluster():
    h = rabbit_host()
    text = render.render("rabbitmq.conf.j2", render.rabbitmq_conf(h))
    assert "listeners.tcp.1 = 10.0.0.6:5672\n" in text
    assert "distribution.listener.interface = 10.0.0.6\n" in text
    assert "distribution.listener.port_range.min = 25672\n" in text
    assert [line.split(" = ")[1] for line in text.splitlines()
            if line.startswith("cluster_formation.classic_config.nodes.")] == [
        "rabbit@10.0.0.5", "rabbit@10.0.0.6", "rabbit@10.0.0.7"]
    assert "vm_memory_high_watermark.absolute = 2048MB\n" in text  # a quarter of 8 GB
    assert "disk_free_limit.absolute = 1024MB\n" in text
    # a delivery may stay unacknowledged as long as Redis's visibility_timeout allows
    assert f"consumer_timeout = {h.visibility_timeout_s * 1000}\n" in text
    env = render.render("rabbitmq-env.conf.j2", render.rabbitmq_env(rabbit_host()))
    assert "NODENAME=rabbit@10.0.0.6\nUSE_LONGNAME=true\n" in env


def test_rabbitmq_firewall_admits_the_fleet_to_amqp_and_only_brokers_to_the_cluster(tmp_path):
    text = render.render("redis-firewall.nft.j2", render.redis_firewall(rabbit_host()))
    assert ("tcp dport 5672 ip saddr { 10.0.0.20, 10.0.0.5, 10.0.0.6, 10.0.0.7, 127.0.0.1 } "
            "accept") in text
    assert ("tcp dport { 4369, 25672, 35672-35682 } ip saddr { 10.0.0.5, 10.0.0.6, 10.0.0.7, "
            "127.0.0.1 } accept") in text
    assert "tcp dport { 4369, 25672, 35672-35682 } counter drop" in text
    # and no RabbitMQ rule with Redis
    assert "5672" not in render.render("redis-firewall.nft.j2", render.redis_firewall(
        deploy_of(roles=("broker",))))


def test_the_celery_settings_module_declares_the_fleets_queues_as_quorum_queues():
    from kombu import Queue

    w = rabbit_host(roles=("embedding", "llm"), address="10.0.0.20")
    text = render.render("celery_fleet_rabbitmq.py.j2", render.celery_rabbitmq_settings(w))
    settings: dict = {}
    exec(compile(text, "celery_fleet_rabbitmq.py", "exec"), settings)
    queues = {q.name: q for q in settings["task_queues"]}
    assert sorted(queues) == ["embeddings", "llm"]
    assert all(isinstance(q, Queue) and q.queue_arguments == {"x-queue-type": "quorum"}
               and q.exchange.name == q.name and q.routing_key == q.name
               for q in queues.values())
    assert settings["broker_transport_options"] == {"confirm_publish": True}
    assert settings["task_default_queue_type"] == "quorum"
    # and every worker and producer loads it: Celery reads CELERY_CONFIG_MODULE
    env = render.render("embedding-worker.env.j2", {
        **render._worker_env(w, "embedding", "threads", 4, 300, 1024),
        "concurrency": '"8"', "api_url": '""', "model": '""', "api_key": '""',
        "rate_limit_per_s": '"0"', "rate_burst": '"1"'})
    assert 'CELERY_CONFIG_MODULE="celery_fleet_rabbitmq"\n' in env
    assert f'PYTHONPATH="{layout.PYTHON_DIR}"\n' in env
    assert env.count("amqp://celery-fleet:rabbit-pass-0123456@") == 3
    assert 'CELERY_RESULT_BACKEND="redis://' in env
    client = render.render("celery-fleet-client.env.j2", render.client_env(w))
    assert "CELERY_CONFIG_MODULE=" in client and "PYTHONPATH=" in client
    # with Redis, none of it
    assert "CELERY_CONFIG_MODULE" not in render.render(
        "celery-fleet-client.env.j2", render.client_env(deploy_of(roles=("client",))))


def test_the_rabbitmq_definitions_hold_the_password_only_as_rabbitmqs_salted_hash():
    import base64
    import hashlib

    text = render.rabbitmq_definitions(rabbit_host())
    definitions = json.loads(text)
    assert "rabbit-pass" not in text
    user = definitions["users"][0]
    raw = base64.b64decode(user["password_hash"])  # salt (4 bytes) + sha256(salt + password)
    assert raw[4:] == hashlib.sha256(raw[:4] + b"rabbit-pass-0123456").digest()
    assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert definitions["permissions"] == [{"user": "celery-fleet", "vhost": "celery-fleet",
                                           "configure": ".*", "write": ".*", "read": ".*"}]
    policy = definitions["policies"][0]
    assert (policy["pattern"], policy["apply-to"], policy["definition"]) == (
        "^(embeddings|llm)$", "queues",
        {"dead-letter-exchange": "celery-fleet.dead-letter", "delivery-limit": 20})
    # the same password, the same file: a second deploy changes nothing
    assert render.rabbitmq_definitions(rabbit_host()) == text
