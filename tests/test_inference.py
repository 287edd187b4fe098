"""The inference server's plan (celery_fleet/inference.py): which server, how many, sized how,
and what is refused before any host is changed."""

import hashlib

import pytest

from celery_fleet import layout
from celery_fleet.fleet import model_problems
from celery_fleet.settings import SettingsError, resolve
from celery_fleet.sizing import Gpu, HostFacts, plan_host

X86 = dict(arch="x86_64", cpu_flags=("fpu", "sse2", "avx", "avx2", "fma", "f16c", "bmi2"))
MODEL = {"llm_model_path": "/models/m.gguf"}


def llm(data=None, ram_mb=16384, cores=4, gpus=(), model_mb=2000, **facts):
    facts = HostFacts(ram_mb, cores, tuple(Gpu(i, v) for i, v in enumerate(gpus)),
                      llm_model_mb=model_mb, **{**X86, **facts})
    return plan_host("h", facts, data or {}, ("llm",)).llm


def refusal(data, **kw) -> str:
    with pytest.raises(SettingsError) as error:
        llm(data, **kw)
    return str(error.value)


def test_without_a_model_the_worker_calls_your_own_server_and_the_plan_says_so():
    plan = llm({})
    assert plan.server is None
    assert any("no model set (llm_model_path or llm_model_host_path)" in r for r in plan.reasons)
    assert llm({**MODEL, "inference_server": "none"}).server is None


def test_a_model_on_a_cpu_host_gets_one_llamacpp_server_with_every_core():
    plan = llm(MODEL)
    server = plan.server
    assert (server.server, server.source) == ("llamacpp", layout.LLAMACPP_REQUIREMENT)
    assert [(i.name, i.port, i.threads, i.slots) for i in server.instances] == [
        ("cpu", 8080, 4, 1)]
    assert [(i.name, i.concurrency) for i in plan.instances] == [("cpu", 1)]
    assert server.model_path == f"{layout.MODEL_DIR}/m.gguf"
    assert server.upload_from == "/models/m.gguf"
    # weights + one KV cache + the server: MemoryMax of the server, not of the worker
    assert server.memory_max_mb == 2000 + 2048 + 384
    assert plan.memory_max_mb == 1024


def test_more_generations_at_once_on_cpu_take_one_server_and_one_worker_each():
    plan = llm({**MODEL, "llm_concurrency": 2, "llm_server_port": 9000})
    assert [(i.name, i.port, i.threads) for i in plan.server.instances] == [
        ("cpu0", 9000, 2), ("cpu1", 9001, 2)]
    assert [(i.name, i.concurrency) for i in plan.instances] == [("cpu0", 1), ("cpu1", 1)]


def test_a_model_on_a_gpu_host_gets_a_vllm_server_per_gpu_sized_by_the_plan():
    plan = llm({"llm_model_host_path": "/srv/m", "llm_model_vram_mb": 16000},
               ram_mb=65536, gpus=(24576, 81920), model_mb=15000)
    server = plan.server
    assert server.server == "vllm" and server.upload_from == "" and server.model_path == "/srv/m"
    assert [(i.name, i.port, i.gpu_index, i.slots, i.gpu_memory_utilization)
            for i in server.instances] == [
        # 24 GB: (16000 + 2 x 2048) / 24576 = 0.818 -> 0.82; 80 GB: 4 at once, 0.3
        ("gpu0", 8080, 0, 2, 0.82), ("gpu1", 8081, 1, 4, 0.3)]
    assert server.memory_max_mb == 15000 + 4096


def test_a_failed_gpu_detection_does_not_turn_a_gpu_host_to_llamacpp():
    """nvidia-smi broken for a moment: the plan is for CPU, but replacing the host's vLLM
    servers with llama.cpp (and its model directory with a GGUF it is not) would be a guess."""
    message = refusal({"llm_model_host_path": "/srv/m"}, gpu_problem="nvidia-smi exit 9")
    assert "inference_server=None" in message and "nvidia-smi exit 9" in message
    assert llm({"llm_model_host_path": "/srv/m", "inference_server": "llamacpp"},
               gpu_problem="nvidia-smi exit 9").server.server == "llamacpp"
    assert llm({}, gpu_problem="nvidia-smi exit 9").server is None  # no model: unchanged


def test_a_model_that_fits_no_gpu_of_a_gpu_host_is_refused_unless_served_on_cpu():
    data = {**MODEL, "llm_model_vram_mb": 30000}
    assert "llm_model_vram_mb=30000" in refusal(data, gpus=(24576,))
    assert llm({**data, "inference_server": "llamacpp"}, gpus=(24576,)).server.server \
        == "llamacpp"


@pytest.mark.parametrize("data, kw, names", [
    ({**MODEL, "llm_model_host_path": "/srv/m"}, {}, "llm_model_host_path='/srv/m'"),
    ({**MODEL, "inference_server": "vllm"}, {}, "inference_server='vllm'"),
    ({**MODEL, "inference_server": "llamacpp"}, {"gpus": (24576,)},
     "inference_server='llamacpp'"),
    ({"inference_server": "llamacpp"}, {}, "llm_model_path=''"),
    (MODEL, {"model_mb": None}, "llm_model_path='/models/m.gguf'"),
    (MODEL, {"arch": "aarch64"}, "inference_server='llamacpp'"),
    (MODEL, {"cpu_flags": ("sse2", "avx")}, "lacks avx2, fma, f16c, bmi2"),
    ({**MODEL, "fake_openai_backend": True}, {}, "llm_server_port=8080"),
])
def test_what_cannot_run_is_refused_naming_the_setting(data, kw, names):
    assert names in refusal(data, **kw)


def test_a_model_larger_than_the_hosts_ram_is_refused_with_the_figures():
    message = refusal(MODEL, ram_mb=8192, model_mb=7000)
    assert "host 'h': llm_model_path='/models/m.gguf'" in message
    # 7000 + 1 x (2048 + 384) = 9432 MB > 75 % of 8192 = 6144
    assert "9432 MB, more than 75% of its 8192 MB (6144 MB)" in message
    assert "llm_model_ram_mb=30000" in refusal({**MODEL, "llm_model_ram_mb": 30000})
    # the weights are shared by the servers (mmap): two slots add KV and server, not weights
    assert llm({**MODEL, "llm_concurrency": 2}, ram_mb=16384, model_mb=7000).server


def test_the_controllers_model_file_is_checked_before_any_change(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100))
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    settings = lambda **kw: resolve("h", {"llm_model_path": str(gguf), **kw})  # noqa: E731
    assert model_problems("h", settings()) == []
    assert model_problems("h", settings(llm_model_sha256=digest)) == []
    assert f"which is {digest}" in model_problems("h", settings(llm_model_sha256="0" * 64))[0]
    assert "this one does not exist" in model_problems(
        "h", resolve("h", {"llm_model_path": str(tmp_path / "none.gguf")}))[0]
    other = tmp_path / "m.bin"
    other.write_bytes(b"PK\x03\x04")
    assert "a GGUF model file" in model_problems("h", resolve("h", {"llm_model_path":
                                                                    str(other)}))[0]
