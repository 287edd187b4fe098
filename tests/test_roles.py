"""The roles without a lab, the way pyinfra tests its operations (STYLE.md 15): for a planned
host of each kind, run what deploy.py runs for it (roles/host.py) inside a real pyinfra
state whose facts come from fixtures (tests/rolekit.py), and check the operations emitted and
the files rendered; then run it again on the facts of the host it left, and see no change."""

from dataclasses import replace
from datetime import timedelta

import pytest

from celery_fleet import layout, render
from celery_fleet.sizing import ALL_ROLES
from hosts import MODEL_SHA256, planned_host
from rolekit import FRESH, NOW, UnknownFact, World, converged, facts_of, run_role
from roles.embedding_worker import embedding_worker
from roles.host import fleet_host
from roles.retire import retire_host
from roles.redis_broker import broker_firewall, redis_broker

UNITS = layout.UNIT_DIR
CONF = layout.CONFIG_DIR
VENV = layout.worker_venv("/opt/celery-fleet")
WORKER_BASE_FILES = {f"{VENV}/pip.conf", layout.ENV_EXEC, layout.HOSTSTATUS, layout.PROBE,
                     "<the worker wheel>", layout.WORKER_STATES, f"{UNITS}/{layout.WORKER_GROUP_UNIT}"}
EMBEDDING_FILES = {f"{UNITS}/{layout.EMBEDDING_UNIT}",
                   f"{UNITS}/{layout.EMBEDDING_UNIT}.d/hardening.conf", layout.EMBEDDING_ENV}
LLM_FILES = {f"{UNITS}/{layout.LLM_UNIT}", f"{UNITS}/{layout.LLM_UNIT}.d/hardening.conf",
             layout.LLM_ENV}
BROKER_FILES = {layout.FIREWALL_RULES, f"{UNITS}/{layout.FIREWALL_UNIT}", layout.REDIS_CONF}
FLOWER_FILES = {layout.FLOWER_ENV, f"{UNITS}/{layout.FLOWER_UNIT}",
                f"{UNITS}/{layout.FLOWER_UNIT}.d/hardening.conf",
                f"{layout.flower_venv('/opt/celery-fleet')}/pip.conf"}

CPU_HOST = planned_host(4096, 1, roles=("embedding", "llm"), name="cpu-small")
GPU_HOST = planned_host(65536, 8, gpus=(24576, 24576), roles=("embedding", "llm"), name="gpu")
BROKER = planned_host(8192, 2, roles=("broker",), name="broker")
CLIENT = planned_host(1024, 1, roles=("client",), name="web", data={"client_user": "www-data"})
ALL_IN_ONE = planned_host(16384, 4, roles=ALL_ROLES, name="one",
                          data={"flower": True, "fake_openai_backend": True})

# Hosts whose plan runs the inference server. The server's package is the lab's fake vLLM
# project (a wheel built in seconds: the real llama-cpp-python build takes minutes); the model a
# GGUF-headed file on the controller.
FAKE_SERVER = str(layout.PROJECT_DIR / "celery_fleet" / "lab" / "fake_vllm")
MODEL = layout.PROJECT_DIR / "tests" / "fixtures" / "model.gguf"
SERVER_VENV = layout.llm_server_venv("/opt/celery-fleet")
LLAMACPP_HOST = planned_host(8192, 4, roles=("llm",), name="cpu-llm", model_mb=1, data={
    "llm_model_path": str(MODEL), "llm_server_source": FAKE_SERVER, "llm_concurrency": 2})
VLLM_HOST = planned_host(65536, 8, gpus=(24576, 24576), roles=("llm",), name="gpu-llm",
                         model_mb=7000, data={"llm_model_host_path": "/srv/models/m",
                                              "llm_server_source": FAKE_SERVER})
SERVER_FILES = {f"{SERVER_VENV}/pip.conf", f"{UNITS}/{layout.LLM_SERVER_UNIT}",
                f"{UNITS}/{layout.LLM_SERVER_UNIT}.d/hardening.conf", "<the server wheel>"}

FIXTURES = {
    "cpu host": (CPU_HOST, WORKER_BASE_FILES | EMBEDDING_FILES | LLM_FILES
                 | {layout.llm_instance_env("cpu")}),
    "gpu host": (GPU_HOST, WORKER_BASE_FILES | EMBEDDING_FILES | LLM_FILES
                 | {layout.llm_instance_env("gpu0"), layout.llm_instance_env("gpu1")}),
    "broker": (BROKER, BROKER_FILES),
    "client": (CLIENT, {layout.CLIENT_ENV}),
    "all in one": (ALL_IN_ONE, WORKER_BASE_FILES | EMBEDDING_FILES | LLM_FILES | BROKER_FILES
                   | FLOWER_FILES | {layout.llm_instance_env("cpu"), layout.FAKE_OPENAI_SCRIPT,
                                     f"{UNITS}/{layout.FAKE_OPENAI_UNIT}"}),
    "llama.cpp host": (LLAMACPP_HOST, WORKER_BASE_FILES | LLM_FILES | SERVER_FILES | {
        layout.llm_instance_env("cpu0"), layout.llm_instance_env("cpu1"),
        layout.llm_server_instance_env("cpu0"), layout.llm_server_instance_env("cpu1"),
        f"{layout.MODEL_DIR}/{MODEL_SHA256[:16]}/model.gguf.partial"}),
    "vLLM host": (VLLM_HOST, WORKER_BASE_FILES | LLM_FILES | SERVER_FILES | {
        layout.llm_instance_env("gpu0"), layout.llm_instance_env("gpu1"),
        layout.llm_server_instance_env("gpu0"), layout.llm_server_instance_env("gpu1")}),
}


MODEL_UPLOAD = ("Upload the model model.gguf",
                "Check the uploaded model's sha256, then move it in place")


def changing(ops) -> list[str]:
    return [op.name for op in ops if op.changes]


def uploads(ops) -> dict:
    """dest -> (what the host receives, the op that sends it); the wheel under one name."""
    found = {}
    for op in ops:
        for dest, data in (c for c in op.commands if isinstance(c, tuple)):
            if dest.endswith(".whl"):
                assert dest.startswith("/opt/celery-fleet/wheels/"), dest
                dest = ("<the server wheel>" if "/vllm-" in dest else "<the worker wheel>")
            found[dest] = (data, op)
    return found


@pytest.fixture(scope="module")
def first_runs():
    return {name: run_role(fleet_host, h) for name, (h, _) in FIXTURES.items()}


@pytest.mark.parametrize("name", FIXTURES)
def test_a_fresh_host_gets_exactly_the_files_of_its_roles(first_runs, name):
    h, files = FIXTURES[name]
    assert set(uploads(first_runs[name])) == files


@pytest.mark.parametrize("name", FIXTURES)
def test_a_second_run_on_the_host_the_first_left_changes_nothing(first_runs, name):
    h, _ = FIXTURES[name]
    again = run_role(fleet_host, h, facts=converged(first_runs[name]))
    # a model at its sha256's path was checked when it came: it is not read again
    assert [op.name for op in again] == [op.name for op in first_runs[name]
                                         if op.name not in MODEL_UPLOAD]
    assert changing(again) == []


@pytest.mark.parametrize("name", FIXTURES)
def test_rendered_files_are_the_renderers_and_secrets_are_private(first_runs, name):
    h, _ = FIXTURES[name]
    files = uploads(first_runs[name])
    expected = {}
    if h.plan.embedding:
        expected[f"{UNITS}/{layout.EMBEDDING_UNIT}"] = render.render(
            f"{layout.EMBEDDING_UNIT}.j2", render.embedding_unit(h))
        expected[layout.EMBEDDING_ENV] = render.render("embedding-worker.env.j2",
                                                       render.embedding_env(h))
    if h.plan.llm:
        expected[layout.LLM_ENV] = render.render("llm-worker.env.j2", render.llm_env(h))
        for instance in h.plan.llm.instances:
            expected[layout.llm_instance_env(instance.name)] = render.render(
                "llm-worker@.env.j2", render.llm_instance_env(h, instance))
    if h.plan.redis:
        expected[layout.REDIS_CONF] = render.render("redis.conf.j2", render.redis_conf(h))
    for dest, text in expected.items():
        assert files[dest][0] == text, dest
    for dest, (data, op) in files.items():
        secret = h.broker.password in str(data)
        assert secret == (dest in (layout.EMBEDDING_ENV, layout.LLM_ENV, layout.REDIS_CONF,
                                   layout.FLOWER_ENV, layout.CLIENT_ENV)), dest
        if secret:  # 0600 for the workers', Flower's and the client's, 0640 redis for Redis's
            assert (op.arguments["mode"], op.arguments["user"]) in (
                ("600", h.settings["service_user"]), ("600", "root"), ("640", "redis"),
                ("600", h.settings["client_user"])), dest


def test_each_gpu_gets_its_pinned_worker_and_each_instance_runs_at_boot(first_runs):
    files = uploads(first_runs["gpu host"])
    names = [op.name for op in first_runs["gpu host"]]
    for index in (0, 1):
        assert f"CUDA_VISIBLE_DEVICES={index}\n" in files[layout.llm_instance_env(f"gpu{index}")][0]
        assert f"Ensure celery-llm-worker@gpu{index}.service runs and starts at boot" in names
    assert "DeviceAllow=char-nvidia-frontend rw" in files[f"{UNITS}/{layout.LLM_UNIT}.d/"
                                                          "hardening.conf"][0]
    assert "--pool=threads --concurrency=16" in files[f"{UNITS}/{layout.EMBEDDING_UNIT}"][0]


def test_a_host_that_left_its_worker_groups_and_flower_has_them_retired(first_runs):
    was = converged(first_runs["all in one"])  # it ran everything, Flower too
    now = planned_host(16384, 4, roles=("broker",), name="one")  # now only the broker
    ops = run_role(fleet_host, now, facts=was)
    assert changing(ops) == [
        # Flower's port leaves the firewall; Redis alone on the host gets half the RAM
        "Render the firewall rules: only the fleet's hosts reach Redis",
        "Load the firewall rules again (they changed)",
        "Configure Redis: private address, password, maxmemory, noeviction, AOF",
        "Restart Redis (its configuration changed)",
        "Stop and disable Flower", "Remove Flower's unit", "Remove Flower's drop-ins",
        "Remove Flower's settings", "Reload systemd (Flower's unit is gone)",
        "Stop and disable celery-worker", "Remove celery-worker.service",
        "Reload systemd (celery-worker.service is gone)",
        "Stop and disable celery-embedding-worker@1.service (no longer in the plan)",
        "Stop and disable celery-embedding-worker@2.service (no longer in the plan)",
        "Stop and disable celery-llm-worker@cpu.service (no longer in the plan)"]
    world = World()
    converged(first_runs["all in one"], world)
    assert changing(run_role(fleet_host, now, facts=converged(ops, world))) == []


OURS = ("/opt/celery-fleet", layout.CONFIG_DIR, layout.HELPER_DIR, layout.CLIENT_ENV,
        f"{UNITS}/celery", f"{layout.CA_CERT_DIR}/{layout.CA_CERT_PREFIX}", layout.DATA_DIR)


@pytest.mark.parametrize("name", ["cpu host", "gpu host", "client", "llama.cpp host"])
def test_a_retired_host_keeps_no_file_unit_or_user_of_ours(first_runs, name):
    h, _ = FIXTURES[name]
    world = World()
    converged(first_runs[name], world)
    world.put(f"{layout.CA_CERT_DIR}/{layout.CA_CERT_PREFIX}proxy.crt", "a CA")
    assert any(p.startswith(OURS) for p in world.files)  # the check below can fail
    ops = run_role(retire_host, h.settings, facts=facts_of(world))
    after = converged(ops, world)
    left = [p for p in [*world.files, *world.dirs] if p.startswith(OURS)]
    assert left == [], left
    assert h.settings["service_user"] not in world.users
    assert not any("celery" in unit for unit in world.running | world.enabled)
    assert "Rebuild the system CA bundle" in changing(ops)
    assert changing(run_role(retire_host, h.settings, facts=after)) == []  # nothing left to do


def test_a_changed_plan_restarts_exactly_the_worker_it_changes(first_runs):
    before = converged(first_runs["cpu host"])
    more = planned_host(4096, 1, roles=("embedding", "llm"), name="cpu-small",
                        data={"embedding_concurrency": 12})
    assert changing(run_role(fleet_host, more, facts=before)) == [
        "Render the embedding worker unit (pool, concurrency, limits of the plan)",
        "Reload systemd (a unit file changed)",
        "Render the embedding worker's settings (0600: broker password, API key)",
        "Restart celery-embedding-worker@1.service (its files changed), one host at a time",
        # the plan is in celery-worker's description: a reload, no restart (PartOf=)
        "Render celery-worker.service (the plan's workers, as one service)",
        "Reload systemd (celery-worker.service changed)",
        "Check each worker is active and runs its planned pool and concurrency"]


def test_a_new_fleet_host_opens_the_firewall_and_touches_nothing_else(first_runs):
    before = converged(first_runs["broker"])
    wider = replace(BROKER, fleet_addresses=BROKER.fleet_addresses + ("10.0.0.10",))
    assert changing(run_role(broker_firewall, wider, facts=before)) == [
        "Render the firewall rules: only the fleet's hosts reach Redis",
        "Load the firewall rules again (they changed)"]


def test_apt_updates_again_once_its_cache_is_a_day_old(first_runs):
    """Not idempotent over time, by design of apt.packages(cache_time=86400): a run a day
    later refreshes the package lists (and nothing else)."""
    later = {**converged(first_runs["broker"]), "server.Date": NOW + timedelta(days=2)}
    assert [(op.name, op.commands) for op in run_role(redis_broker, BROKER, facts=later)
            if op.changes] == [
        ("Install Redis",
         ("apt-get update", "touch /var/lib/apt/periodic/update-success-stamp"))]


def test_an_unknown_fact_fails_loudly_with_its_name_and_arguments():
    facts = {k: v for k, v in FRESH.items() if k != "files.File"}
    with pytest.raises(UnknownFact, match=r"files\.File\(path=/etc/systemd/system/celery-"):
        run_role(embedding_worker, CPU_HOST, [], facts=facts)


def test_a_client_gets_celerys_own_variables_readable_by_its_apps_user(first_runs):
    text, op = uploads(first_runs["client"])[layout.CLIENT_ENV]
    assert f'CELERY_BROKER_URL="{CLIENT.broker_url}"' in text
    assert f'CELERY_RESULT_BACKEND="{CLIENT.broker_url}"' in text
    assert (op.arguments["user"], op.arguments["mode"]) == ("www-data", "600")
    was = converged(first_runs["client"])
    gone = run_role(fleet_host, replace(CLIENT, roles=()), facts=was)
    assert changing(gone) == ["Remove the broker's address (the host left celery_clients)"]


def test_each_llm_worker_instance_calls_its_own_inference_server(first_runs):
    """llama.cpp: 2 generations at once on 4 cores = 2 servers of 2 threads (one request at a
    time each), one worker each; vLLM: a server per GPU, pinned, sized by the plan."""
    files = uploads(first_runs["llama.cpp host"])
    server_unit = files[f"{UNITS}/{layout.LLM_SERVER_UNIT}"][0]
    assert server_unit == render.render(f"{layout.LLM_SERVER_UNIT}.j2",
                                        render.llm_server_unit(LLAMACPP_HOST))
    assert (f"ExecStart={SERVER_VENV}/bin/python -m llama_cpp.server --model "
            f'"{layout.MODEL_DIR}/{MODEL_SHA256[:16]}/model.gguf" --model_alias "default" '
            "--host 127.0.0.1 --port "
            "${FLEET_SERVER_PORT} --n_threads ${FLEET_SERVER_THREADS} --n_threads_batch "
            "${FLEET_SERVER_THREADS} --n_ctx 4096\n") in server_unit
    for index in (0, 1):
        env = files[layout.llm_server_instance_env(f"cpu{index}")][0]
        assert f"FLEET_SERVER_PORT={8080 + index}\n" in env
        assert "FLEET_SERVER_THREADS=2\n" in env and "FLEET_SERVER_SLOTS=1\n" in env
        worker_env = files[layout.llm_instance_env(f"cpu{index}")][0]
        assert f'LLM_API_URL="http://127.0.0.1:{8080 + index}/v1"' in worker_env
        assert 'FLEET_CONCURRENCY="1"' in worker_env
    worker_unit = files[f"{UNITS}/{layout.LLM_UNIT}"][0]
    assert "\nWants=celery-fleet-llm-server@%i.service\nAfter=celery-fleet-llm-server@%i" \
        in worker_unit
    ops = {op.name: op for op in first_runs["llama.cpp host"]}
    # uploaded beside its place, checked, then moved in: a file at the path is a whole model
    assert ops["Upload the model model.gguf"].arguments["dest"].endswith("model.gguf.partial")
    assert (f"printf '%s  %s\\n' {MODEL_SHA256} {layout.MODEL_DIR}/{MODEL_SHA256[:16]}/model.gguf"
            ".partial | sha256sum --check --strict --quiet") in ops[MODEL_UPLOAD[1]].commands[0]
    # ready means answering: the unit waits for /v1/models (render's ExecStartPost)
    assert f"ExecStartPost=/bin/sh -c 'until {SERVER_VENV}/bin/python" in server_unit
    assert ops["Check each inference server answers with a real completion"].changes

    files = uploads(first_runs["vLLM host"])
    server_unit = files[f"{UNITS}/{layout.LLM_SERVER_UNIT}"][0]
    assert ('/bin/vllm serve "/srv/models/m" --served-model-name "default" --host 127.0.0.1 '
            "--port ${FLEET_SERVER_PORT} --max-num-seqs ${FLEET_SERVER_SLOTS} "
            "--gpu-memory-utilization ${FLEET_GPU_MEMORY_UTILIZATION} --max-model-len 4096\n"
            ) in server_unit
    assert "MemoryMax=11096M" in server_unit  # the weights (7000 MB) + vLLM's 4096
    assert "DeviceAllow=char-nvidia-frontend rw" in files[
        f"{UNITS}/{layout.LLM_SERVER_UNIT}.d/hardening.conf"][0]
    for index in (0, 1):
        env = files[layout.llm_server_instance_env(f"gpu{index}")][0]
        # 24 GB: 8192 MB of weights + 4 x 2048 MB of KV cache + 2048 MB runtime = 75 %
        assert f"CUDA_VISIBLE_DEVICES={index}\n" in env and "FLEET_SERVER_SLOTS=4\n" in env
        assert "FLEET_GPU_MEMORY_UTILIZATION=0.75\n" in env
        assert f"FLEET_SERVER_PORT={8080 + index}\n" in env
        assert (f'LLM_API_URL="http://127.0.0.1:{8080 + index}/v1"'
                in files[layout.llm_instance_env(f"gpu{index}")][0])


def test_a_host_whose_plan_drops_its_server_stops_it_and_keeps_its_workers(first_runs):
    was = converged(first_runs["llama.cpp host"])
    now = planned_host(8192, 4, roles=("llm",), name="cpu-llm", data={"llm_concurrency": 2})
    changed = changing(run_role(fleet_host, now, facts=was))
    stopped = [name for name in changed if name.startswith("Stop and disable")]
    # the workers first (a warm shutdown: a running generation still has its server)
    assert stopped == ["Stop and disable celery-llm-worker@cpu0.service (no longer in the "
                       "plan)", "Stop and disable celery-llm-worker@cpu1.service (no longer in "
                       "the plan)", "Stop and disable celery-fleet-llm-server@cpu0.service (no "
                       "longer in the plan)", "Stop and disable celery-fleet-llm-server@cpu1."
                       "service (no longer in the plan)"]
    # and what the server had goes: unit, settings, virtualenv, models (GBs)
    removed = [name for name in changed if name.startswith("Remove")]
    assert removed == [
        f"Remove {layout.LLM_SERVER_UNIT}", f"Remove {layout.LLM_SERVER_UNIT}'s drop-ins",
        f"Remove {layout.llm_server_instance_env('cpu0')} (a server no longer in the plan)",
        f"Remove {layout.llm_server_instance_env('cpu1')} (a server no longer in the plan)",
        f"Remove {SERVER_VENV} (the server's virtualenv)",
        f"Remove {layout.MODEL_DIR} (the models uploaded for it)"]


def test_one_slot_becoming_two_frees_the_port_before_the_new_servers_start():
    """@cpu holds port 8080, which @cpu0 takes: the old worker stops first (warm shutdown,
    its server still answers), then the old server, then the new servers start."""
    one = replace(LLAMACPP_HOST, plan=planned_host(
        8192, 4, roles=("llm",), name="cpu-llm", model_mb=1,
        data={"llm_model_path": str(MODEL), "llm_server_source": FAKE_SERVER}).plan)
    was = converged(run_role(fleet_host, one))
    order = changing(run_role(fleet_host, LLAMACPP_HOST, facts=was))
    stop_worker, stop_server, start_new = (order.index(name) for name in (
        "Stop and disable celery-llm-worker@cpu.service (no longer in the plan)",
        "Stop and disable celery-fleet-llm-server@cpu.service (no longer in the plan)",
        "Restart celery-fleet-llm-server@cpu0.service (its files changed), one host at a time"))
    assert stop_worker < stop_server < start_new
    assert f"Remove {layout.llm_server_instance_env('cpu')} (a server no longer in the plan)" \
        in order


def test_a_longer_context_restarts_the_servers_and_not_their_workers(first_runs):
    """The context is the servers' (--n_ctx): both restart, one at a time; the workers, whose
    files did not change, keep running their tasks."""
    was = converged(first_runs["llama.cpp host"])
    longer = replace(LLAMACPP_HOST, plan=planned_host(
        8192, 4, roles=("llm",), name="cpu-llm", model_mb=1, data={
            "llm_model_path": str(MODEL), "llm_server_source": FAKE_SERVER,
            "llm_concurrency": 2, "llm_context_size": 5120}).plan)
    restarted = [name.split()[1] for name in changing(run_role(fleet_host, longer, facts=was))
                 if name.startswith("Restart")]
    assert restarted == ["celery-fleet-llm-server@cpu0.service",
                         "celery-fleet-llm-server@cpu1.service"]


def test_models_no_server_loads_are_removed_and_the_planned_one_kept(first_runs):
    """An older upload (another sha256's directory) and a model of the layout before models
    were named by their sha256 go, after the restart; the plan's own stays; a re-run removes
    nothing more."""
    w = World()
    converged(first_runs["llama.cpp host"], w)
    planned = LLAMACPP_HOST.plan.llm.server.model_path
    assert planned in w.files
    w.put(f"{layout.MODEL_DIR}/0123456789abcdef/old.gguf", b"GGUF old")
    w.put(f"{layout.MODEL_DIR}/model.gguf", b"GGUF older layout")
    second = run_role(fleet_host, LLAMACPP_HOST, facts=facts_of(w))
    assert [n for n in changing(second) if n.startswith("Remove")] == [
        f"Remove {layout.MODEL_DIR}/0123456789abcdef (a model no server loads)",
        f"Remove {layout.MODEL_DIR}/model.gguf (a model no server loads)"]
    converged(second, w)
    assert [p for p in w.files if p.startswith(layout.MODEL_DIR)] == [planned]
    assert changing(run_role(fleet_host, LLAMACPP_HOST, facts=facts_of(w))) == []


# ---- broker: rabbitmq (issue #14) ---------------------------------------------------------

def rabbit(h, address):
    from celery_fleet.fleetplan import RabbitmqCluster

    data = {"broker": "rabbitmq"}
    planned = planned_host(8192, 2, roles=h.roles, name=h.name, data=data)
    return replace(planned, private_address=address, runs_redis=address == "10.0.0.5",
                   rabbitmq=RabbitmqCluster(("10.0.0.5", "10.0.0.6", "10.0.0.7"), 5672,
                                            "rabbit-pass-0123456789", "COOKIE0123456789"))


def test_a_rabbitmq_broker_and_worker_converge_and_keep_their_secrets_private():
    seed, other = rabbit(BROKER, "10.0.0.5"), rabbit(BROKER, "10.0.0.6")
    worker = rabbit(CPU_HOST, "10.0.0.20")
    for h in (seed, other, worker):
        first = run_role(fleet_host, h)
        assert changing(run_role(fleet_host, h, facts=converged(first))) == [], h.name
    first = run_role(fleet_host, seed)
    names = changing(first)
    assert names.index("Install RabbitMQ without starting it (it first starts configured)") \
        < names.index("Start RabbitMQ for the first time (the brokers at once: they form the "
                      "cluster)")
    assert "Set up the fleet's vhost, user (no guest) and quorum queue policy" in names
    assert "Set up the fleet's vhost, user (no guest) and quorum queue policy" not in \
        changing(run_role(fleet_host, other))  # the cluster's: once, on the first broker
    files = uploads(first)
    assert files[layout.RABBITMQ_COOKIE][1].arguments["mode"] == "400"
    assert files[layout.RABBITMQ_DEFINITIONS][1].arguments["mode"] == "600"
    assert "rabbit-pass" not in files[layout.RABBITMQ_DEFINITIONS][0]  # only its hash
    # no secret on any command line
    for op in first:
        for command in (c for c in op.commands if isinstance(c, str)):
            assert "rabbit-pass" not in command and "COOKIE" not in command, op.name
    worker_files = uploads(run_role(fleet_host, worker))
    module = f"{layout.PYTHON_DIR}/{layout.RABBITMQ_CELERY_CONFIG_MODULE}.py"
    assert "x-queue-type" in worker_files[module][0]
    on_b2 = changing(run_role(fleet_host, other))
    assert "Install Redis" not in on_b2 and not any(n.startswith("Configure Redis")
                                                    for n in on_b2)  # Redis on b1 only
