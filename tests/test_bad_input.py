"""Bad input (issue #5): every kind gives one clear error naming the host, the key, the value
and what is accepted. The lab test tests/lab/test_deploy.py checks no host is changed."""


import re

import pytest

from celery_fleet.fleet import controller_problems
from celery_fleet.settings import SettingsError, problems, resolve
from celery_fleet.sizing import Gpu, HostFacts, plan_host

CPU_HOST = HostFacts(4096, 1)
GPU_HOST = HostFacts(16384, 2, (Gpu(0, 24576),))

# (data, key, value shown, what is accepted): refused by the settings mapping itself
VALUE_KINDS = [
    ({"embedding_concurrency": -4}, "embedding_concurrency", "-4", "a whole number >= 1"),
    ({"embedding_concurrency": "16"}, "embedding_concurrency", "'16'", "a whole number >= 1"),
    ({"embedding_concurrency": 8.5}, "embedding_concurrency", "8.5", "a whole number >= 1"),
    ({"embedding_pool": "eventlet"}, "embedding_pool", "'eventlet'",
     "one of gevent, threads, prefork, solo"),
    ({"embedding_processes": 0}, "embedding_processes", "0", "a whole number >= 1"),
    ({"embedding_rate_limit_per_min": 0}, "embedding_rate_limit_per_min", "0",
     "a number of requests per minute > 0"),
    ({"embedding_latency_ms": -200}, "embedding_latency_ms", "-200", "milliseconds > 0"),
    ({"embedding_api_url": "10.0.0.5:8000/v1"}, "embedding_api_url", "'10.0.0.5:8000/v1'",
     "an http(s) URL"),
    ({"llm_pool": "asyncio"}, "llm_pool", "'asyncio'", "on CPU one of prefork, solo"),
    ({"llm_model_vram_mb": 0}, "llm_model_vram_mb", "0", "a whole number of MB >= 256"),
    ({"ram_mb": 100}, "ram_mb", "100", "a whole number of MB >= 512"),
    ({"cores": True}, "cores", "True", "a whole number >= 1"),
    ({"gpus": 24576}, "gpus", "24576", "a list of VRAM sizes in MB"),
    ({"redis_port": 0}, "redis_port", "0", "a port number 1-65535"),
    # secrets are never printed: a mask, or the source they come from
    ({"redis_password": "short"}, "redis_password", "<hidden, 5 characters>",
     "16 or more printable ASCII"),
    ({"redis_password": 'has"quote-0123456789'}, "redis_password", "<hidden, 20 characters>",
     "without blanks, quotes or backslashes"),
    ({"redis_password": "env:not a name"}, "redis_password", "'env:not a name'",
     "env:NAME, file:PATH or command:CMD"),
    ({"llm_api_key": "command:pass 'unclosed"}, "llm_api_key", "\"command:pass 'unclosed\"",
     "command:CMD"),
    ({"llm_gpu_api_urls": ["127.0.0.1:8001"]}, "llm_gpu_api_urls", "['127.0.0.1:8001']",
     "a list of http(s) URLs, one per GPU"),
    ({"install_dir": "opt/fleet"}, "install_dir", "'opt/fleet'", "an absolute path"),
    ({"service_user": "root"}, "service_user", "'root'", "not root"),
    ({"embedding_api_key": "line\nbreak"}, "embedding_api_key", "<hidden, 10 characters>",
     "the key (printable ASCII)"),
    ({"embeding_concurrency": 8}, "embeding_concurrency", "8",
     "no such setting (did you mean embedding_concurrency?)"),
    ({"llm_concurency": 2}, "llm_concurency", "2", "did you mean llm_concurrency?"),
    ({"embedding_queues": "tj-vectors"}, "embedding_queues", "'tj-vectors'",
     "a list of queue names"),
    ({"llm_queues": ["has space"]}, "llm_queues", "['has space']", "a list of queue names"),
    ({"worker_requirements": ["--index-url=http://x"]}, "worker_requirements",
     "['--index-url=http://x']", "a list of pip requirements"),
    ({"embedding_batch": 8}, "embedding_batch", "8", "no such setting"),
    ({"flower": "yes"}, "flower", "'yes'", "true or false"),
    ({"flower_allowed_networks": ["10.0.0.0/33"]}, "flower_allowed_networks",
     "['10.0.0.0/33']", "a list of IPv4 addresses or networks"),
    ({"llm_memory_max_mb": 100}, "llm_memory_max_mb", "100", "a whole number of MB >= 256"),
]


@pytest.mark.parametrize("data, key, shown, accepted", VALUE_KINDS,
                         ids=[k[1] + "=" + k[2] for k in VALUE_KINDS])
def test_each_bad_value_is_one_clear_error(data, key, shown, accepted):
    found = problems("worker-7", data)
    assert len(found) == 1
    message = str(found[0])
    assert message.startswith(f"host 'worker-7': {key}={shown} is not accepted: ")
    assert accepted in message
    with pytest.raises(SettingsError):
        resolve("worker-7", data)


# refused by a sizing rule that needs the host's facts
@pytest.mark.parametrize("facts, data, message", [
    (CPU_HOST, {"llm_pool": "gevent"}, "llm_pool='gevent' is not accepted: on CPU one of"),
    (CPU_HOST, {"llm_pool": "threads"},
     "llm_pool='threads' is not accepted: on a host without GPUs one of prefork, solo"),
    (GPU_HOST, {"llm_pool": "prefork"},
     "llm_pool='prefork' is not accepted: on a GPU host one of threads, solo"),
])
def test_pools_that_do_not_fit_the_hardware_are_refused(facts, data, message):
    found = problems("h", data)
    if found:
        assert message in str(found[0])
        return
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        plan_host("h", facts, data)


def controller(settings_data, detected=CPU_HOST):
    return controller_problems("gpu-9", resolve("gpu-9", settings_data), detected)


def test_a_gpu_override_on_a_host_without_gpus_is_refused():
    found = controller({"gpus": [24576]})
    assert found == ["host 'gpu-9': gpus=[24576] is not accepted: at most the GPUs the host has "
                     "(nvidia-smi finds 0 GPU(s)); a worker pinned to a missing GPU cannot start"]
    broken = HostFacts(8192, 2, (), gpu_problem="nvidia-smi exit 9: driver")
    assert "nvidia-smi failed: nvidia-smi exit 9: driver" in controller({"gpus": [24576]},
                                                                        broken)[0]
    assert controller({"gpus": [24576]}, GPU_HOST) == []


def test_missing_controller_files_are_refused(tmp_path):
    found = controller({"extra_ca_certificates": [str(tmp_path / "missing.crt")],
                        "worker_app_source": str(tmp_path / "no-such-app")})
    assert found[0].startswith("host 'gpu-9': extra_ca_certificates='")
    assert "this one does not exist" in found[0]
    assert "worker_app_source=" in found[1] and "a directory with a pyproject.toml" in found[1]
    assert controller({"worker_app_source": "mycompany-workers==1.2"}) == []
    # the inference server's source: a directory without a project is no pip requirement
    bare = tmp_path / "vllm-checkout"
    bare.mkdir()
    found = controller({"llm_server_source": str(bare)})
    assert len(found) == 1 and "llm_server_source=" in found[0]
    assert "such as vllm==0.11.0" in found[0]
    assert controller({"llm_server_source": "vllm==0.11.0"}) == []
    # a PEP 508 URL requirement is a requirement, not a path; a malformed one is refused
    assert controller({"llm_server_source":
                       "vllm @ git+https://github.com/vllm-project/vllm@v0.11.0"}) == []
    found = controller({"worker_app_source": "mycompany-workers=>1.2"})
    assert len(found) == 1 and "not a requirement (" in found[0], found


def test_all_problems_of_a_host_are_reported_together():
    found = problems("h", {"embedding_concurrency": 0, "llm_pool": "x", "redis_port": "6379"})
    assert [e.key for e in found] == ["embedding_concurrency", "llm_pool", "redis_port"]


def test_the_deploy_summary_names_what_was_not_deployed():
    from celery_fleet.summary import summary_lines

    assert summary_lines(["a", "b"], [], []) == ["--> celery-fleet: deployed 2 of 2 host(s)"]
    assert summary_lines(["a", "b"], ["c"], ["b"]) == [
        "--> celery-fleet: deployed 1 of 3 host(s)",
        "    [c] unreachable: not changed; deploy again once it answers SSH",
        "    [b] failed: see its errors above; the other hosts were deployed"]
    assert summary_lines(["a", "b"], ["c"], [], executed=False) == [
        "--> celery-fleet: nothing was changed (--dry, or not confirmed); 2 of 3 host(s) planned",
        "    [c] unreachable: not planned"]


@pytest.mark.parametrize("data, message", [
    ({"embedding_concurrency": 100000},
     "embedding_concurrency=100000 is not accepted: at most 5428 tasks in flight per process (4 "
     "process(es) here): each holds 3 connections and a process may open 16384 files"),
    ({"embedding_processes": 5},
     "embedding_processes=5 is not accepted: at most 4 on this host (2 per core"),
    ({"embedding_pool": "threads", "embedding_concurrency": 20000, "embedding_processes": 2},
     "embedding_concurrency=20000 is not accepted: at most 5428"),
    # memory: slots whose floor (benchmarks/slot_memory.py) passes the memory watch's mark
    ({"embedding_pool": "gevent", "embedding_concurrency": 6000, "embedding_processes": 2,
      "embedding_memory_max_mb": 256},
     "embedding_concurrency=6000 is not accepted: 3000 gevent slots a process need at least "
     "290 MB (61 MB + 78 KB a slot, benchmarks/slot_memory.py), over the memory watch's mark "
     "of 204 MB (80% of MemoryMax 256 MB): at most 1877 slots, or a larger "
     "embedding_memory_max_mb"),
    ({"embedding_pool": "threads", "embedding_concurrency": 3000, "embedding_processes": 2,
      "embedding_memory_max_mb": 256}, "embedding_concurrency=3000 is not accepted: 1500 "
     "threads slots a process need at least 224 MB"),
])
def test_a_plan_the_host_cannot_run_is_refused_naming_the_key(data, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        plan_host("h", HostFacts(8192, 2), data, ("embedding",))
    plan_host("h", HostFacts(8192, 2), {"embedding_concurrency": 5000}, ("embedding",))


@pytest.mark.parametrize("pool", ["gevent", "threads"])
def test_every_default_plan_fits_its_memory_and_file_limits(pool):
    # the rules above refuse only what the inventory sets: no host shape trips them by default
    for ram_mb in (512, 1024, 2048, 4096, 8192, 16384, 65536, 262144):
        for cores in (1, 2, 4, 8, 16, 64):
            plan_host("h", HostFacts(ram_mb, cores), {"embedding_pool": pool}, ("embedding",))


def test_a_controller_without_a_compiler_is_told_before_any_host_changes(tmp_path, monkeypatch):
    """llama.cpp is compiled on the controller the first time a plan has it: without g++ or
    cmake that would fail mid-deploy; the plan names the host, the setting and the fix."""
    from celery_fleet import layout, wheel
    from celery_fleet.fleet import build_problems
    from hosts import planned_host

    h = planned_host(8192, 4, roles=("llm",), name="cpu-1", model_mb=100,
                     data={"llm_model_path": "/models/m.gguf"})
    monkeypatch.setattr(layout, "SERVER_WHEEL_CACHE", tmp_path)
    monkeypatch.setattr(wheel.shutil, "which", lambda tool: None if tool == "cmake" else tool)
    assert build_problems({"cpu-1": h}) == [
        "host 'cpu-1': inference_server='llamacpp' is not accepted: cmake on this controller, "
        f"which compiles {layout.LLAMACPP_REQUIREMENT} once for every host (apt-get install "
        "cmake); or none, with your own server at llm_api_url"]
    # once built (cached), nothing is compiled again: nothing is needed
    cached = wheel.requirement_wheel_dir(layout.LLAMACPP_REQUIREMENT,
                                         layout.LLAMACPP_CMAKE_ARGS, tmp_path)
    cached.mkdir(parents=True)
    (cached / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl").write_bytes(b"")
    assert build_problems({"cpu-1": h}) == []
    assert build_problems({"web": planned_host(roles=("embedding",), name="web")}) == []
