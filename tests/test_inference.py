"""The inference server's plan (celery_fleet/inference.py): which server, how many, sized how,
and what is refused before any host is changed; the model as the controller and the host see it
(celery_fleet/model_file.py, facts.ModelOnHost)."""

import hashlib
import os
import struct
import subprocess

import pytest

from celery_fleet import layout, model_file
from celery_fleet.facts import ModelOnHost
from celery_fleet.settings import SettingsError
from celery_fleet.sizing import Gpu, HostFacts, plan_host

X86 = dict(arch="x86_64", cpu_flags=("fpu", "sse2", "avx", "avx2", "fma", "f16c", "bmi2"))
MODEL = {"llm_model_path": "/models/m.gguf"}
DIGEST = "ab" * 32


def llm(data=None, ram_mb=16384, cores=4, gpus=(), model_mb=2000, model_format="gguf",
        **facts):
    facts = HostFacts(ram_mb, cores, tuple(Gpu(i, v) for i, v in enumerate(gpus)),
                      llm_model_mb=model_mb, llm_model_format=model_format,
                      llm_model_sha256=DIGEST, **{**X86, **facts})
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
    # named by its content: a new model never overwrites the file a running server maps
    assert server.model_path == f"{layout.MODEL_DIR}/{DIGEST[:16]}/m.gguf"
    assert (server.upload_from, server.model_sha256) == ("/models/m.gguf", DIGEST)
    # weights + one KV cache + the server: MemoryMax of the server, not of the worker
    assert server.memory_max_mb == 2000 + 2048 + 384
    assert plan.memory_max_mb == 1024


def test_more_generations_at_once_on_cpu_take_one_server_and_one_worker_each():
    plan = llm({**MODEL, "llm_concurrency": 2, "llm_server_port": 9000})
    assert [(i.name, i.port, i.threads) for i in plan.server.instances] == [
        ("cpu0", 9000, 2), ("cpu1", 9001, 2)]
    assert [(i.name, i.concurrency) for i in plan.instances] == [("cpu0", 1), ("cpu1", 1)]


def test_a_model_on_a_gpu_host_gets_a_vllm_server_per_gpu_sized_by_the_plan():
    plan = llm({"llm_model_host_path": "/srv/m", "llm_model_vram_mb": 14000},
               ram_mb=65536, gpus=(24576, 81920), model_mb=15000, model_format="directory")
    server = plan.server
    assert server.server == "vllm" and server.upload_from == "" and server.model_path == "/srv/m"
    assert [(i.name, i.port, i.gpu_index, i.slots, i.gpu_memory_utilization)
            for i in server.instances] == [
        # weights + generations x KV + the server's runtime (activations, CUDA graphs):
        # 24 GB: 2 at once, (14000 + 2 x 2048 + 2048) / 24576 = 0.8195 -> 0.82;
        # 80 GB: 4 at once, (14000 + 4 x 2048 + 2048) / 81920 = 0.2959 -> 0.30
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
    (MODEL, {"model_format": "absent"}, "llm_model_path='/models/m.gguf'"),
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


@pytest.mark.parametrize("data, facts, accepted", [
    (MODEL, {"model_format": "absent"}, "a model that exists on this controller"),
    ({"llm_model_host_path": "/srv/m.gguf"}, {"model_format": "absent"},
     "a model that exists on the host"),
    (MODEL, {"model_format": "unreadable"}, "readable on this controller"),
    (MODEL, {"model_format": "directory"}, "is copied to the hosts first and named in "
                                           "llm_model_host_path"),
    (MODEL, {"model_format": "other"}, "a GGUF model file (it starts with the bytes GGUF) for "
                                       "llamacpp"),
    ({"llm_model_host_path": "/srv/m"}, {"model_format": "directory"}, "for llamacpp"),
    ({"llm_model_host_path": "/srv/m"}, {"model_format": "other", "gpus": (81920,)},
     "or a model directory for vllm"),
    ({**MODEL, "llm_model_sha256": "0" * 64}, {}, f"which is {DIGEST}"),
    ({"llm_model_host_path": "/srv/m.gguf", "llm_model_sha256": DIGEST}, {},
     "empty with llm_model_host_path"),
    ({"llm_model_host_path": "/srv/m.gguf"}, {"model_format": "unreadable"},
     "permission denied to the deploy user"),
    # celery-fleet's own model directory: its models are removed when the plan changes
    ({"llm_model_host_path": f"{layout.MODEL_DIR}/m.gguf"}, {}, f"a path outside "
     f"{layout.MODEL_DIR}: celery-fleet keeps"),
    # ProtectHome=yes: the server would not see it
    ({"llm_model_host_path": "/home/ops/m.gguf"}, {}, "ProtectHome=yes"),
    ({"llm_model_host_path": "/root"}, {"model_format": "directory", "gpus": (81920,)},
     "ProtectHome=yes"),
])
def test_a_model_that_is_missing_unreadable_of_the_wrong_format_or_not_its_sha256_is_refused(
        data, facts, accepted):
    assert accepted in refusal(data, **facts)


def test_the_sha256_is_accepted_in_either_case():
    assert llm({**MODEL, "llm_model_sha256": DIGEST.upper()}).server.model_sha256 == DIGEST
    # vLLM loads a model directory on the host, or one GGUF file
    assert llm({"llm_model_host_path": "/srv/m"}, gpus=(81920,),
               model_format="directory").server.server == "vllm"


def test_a_plan_without_an_inventory_needs_the_size_of_a_model_on_the_host():
    """fleet plan --ram-mb ... cannot look on a host: the size is asked for, not guessed."""
    host_model = {"llm_model_host_path": "/srv/m.gguf"}
    assert "llm_model_ram_mb=None" in refusal(host_model, model_mb=None, model_format="")
    plan = llm({**host_model, "llm_model_ram_mb": 3000}, model_mb=None, model_format="")
    assert plan.server.model_ram_mb == 3000


def test_the_kv_cache_follows_the_context_and_the_models_own_header():
    """llama.cpp allocates the whole context's KV cache when it starts: the server's
    MemoryMax grows with llm_context_size, by the model's own figure where its header says."""
    assert llm(MODEL).server.memory_max_mb == 2000 + 2048 + 384  # 7B without GQA, 4096
    assert llm({**MODEL, "llm_context_size": 8192}).server.memory_max_mb == 2000 + 4096 + 384
    # Llama 3 8B: 32 layers x 8 KV heads x (128 + 128) x 2 bytes = 128 KiB a token
    header = llm({**MODEL, "llm_context_size": 8192}, llm_model_kv_bytes_per_token=131072)
    assert header.server.memory_max_mb == 2000 + 1024 + 384
    assert any("from the model's GGUF header (131072 bytes a token)" in r
               for r in header.reasons)
    explicit = llm({**MODEL, "llm_kv_cache_per_task_mb": 300},
                   llm_model_kv_bytes_per_token=131072)
    assert explicit.server.memory_max_mb == 2000 + 300 + 384  # the inventory wins
    # a context too long for the host's RAM is refused naming what to shorten
    assert "shorter llm_context_size" in refusal({**MODEL, "llm_context_size": 65536},
                                                 ram_mb=16384)


def test_a_gpu_counts_the_servers_runtime_beside_weights_and_kv_caches():
    """vLLM refuses to start when one --max-model-len sequence does not fit beside the weights
    and its runtime ("No available memory for the cache blocks"): the plan counts it."""
    # 24 GB x 0.9 = 22118 MB: 18000 + 2048 runtime leaves 2070 MB, one 2048 MB generation
    plan = llm({"llm_model_host_path": "/srv/m", "llm_model_vram_mb": 18000},
               gpus=(24576,), model_format="directory")
    assert [(i.slots, i.gpu_memory_utilization) for i in plan.server.instances] == [(1, 0.9)]
    # a longer context leaves the GPU no room for one generation: refused, saying why
    message = refusal({"llm_model_host_path": "/srv/m", "llm_model_vram_mb": 18000,
                       "llm_context_size": 8192}, gpus=(24576,), model_format="directory")
    assert "llm_model_vram_mb=18000" in message and "runtime, 2048 MB" in message
    assert "shorter llm_context_size" in message


# ---- the model on the controller (model_file) and on the host (facts.ModelOnHost) ----------

def _header_only_gguf(path, **sizes):
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(sizes["layers"])
    writer.add_embedding_length(sizes["embedding"])
    writer.add_head_count(sizes["heads"])
    if "kv_heads" in sizes:
        writer.add_head_count_kv(sizes["kv_heads"])
    writer.add_token_list([f"t{i}" for i in range(5000)])  # an array the reader skips
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return str(path)


def test_the_kv_cache_a_token_takes_is_read_from_the_gguf_header(tmp_path):
    from celery_fleet.lab import tiny_gguf

    # the lab's tiny model: 2 layers x 4 heads x (16 + 16) x 2 bytes
    tiny = tiny_gguf.write(tmp_path / "tiny.gguf")
    size, kind, kv = model_file.describe(str(tiny))
    assert (kind, kv) == ("gguf", 2 * 4 * 32 * 2) and size == 1
    # grouped-query attention (Llama 3 8B's shape) and a model without KV heads given
    llama3 = _header_only_gguf(tmp_path / "l3.gguf", layers=32, embedding=4096, heads=32,
                               kv_heads=8)
    assert model_file.describe(llama3)[2] == 32 * 8 * 256 * 2 == 131072
    llama2 = _header_only_gguf(tmp_path / "l2.gguf", layers=32, embedding=4096, heads=32)
    assert model_file.describe(llama2)[2] == 524288  # 0.5 MB a token: the default's figure


def test_a_broken_or_foreign_model_file_is_described_not_raised(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(100))  # version 0: llama.cpp refuses it too
    assert model_file.describe(str(broken)) == (1, "gguf", None)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(8) + (5).to_bytes(8, "little"))
    assert model_file.describe(str(truncated))[1:] == ("gguf", None)
    # an array that claims 2**62 values is skipped (not unpacked into memory); zero heads do
    # not divide the embedding
    huge = tmp_path / "huge.gguf"
    key = b"general.x"
    huge.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
                     + struct.pack("<IIQ", 9, 4, 2**62))
    assert model_file.describe(str(huge))[1:] == ("gguf", None)
    zero = _header_only_gguf(tmp_path / "zero.gguf", layers=2, embedding=64, heads=0)
    assert model_file.describe(zero)[1:] == ("gguf", None)
    assert model_file.kv_bytes_per_token({"general.architecture": "a", "a.block_count": 2,
                                          "a.embedding_length": 64,
                                          "a.attention.head_count": [0, 0]}) is None
    other = tmp_path / "model.safetensors"
    other.write_bytes(b"{}" * 10)
    assert model_file.describe(str(other)) == (1, "other", None)
    assert model_file.describe(str(tmp_path)) [1] == "directory"
    assert model_file.describe(str(tmp_path / "none")) is None
    assert model_file.controller_facts(str(tmp_path / "none"), None) == {
        "llm_model_format": "absent"}


def test_an_unreadable_model_is_a_fact_not_a_traceback(tmp_path, monkeypatch):
    def denied(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(model_file, "describe", denied)
    assert model_file.controller_facts(str(tmp_path / "m.gguf"), None) == {
        "llm_model_format": "unreadable"}


def test_the_models_sha256_is_computed_once_per_content(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(1000))
    cache = tmp_path / "cache"
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert model_file.sha256_of(str(model), cache) == digest
    # the next run reads it from the cache (here altered, to see that it is read)
    entry = next(cache.iterdir())
    entry.write_text(entry.read_text().replace(digest, "c" * 64))
    assert model_file.sha256_of(str(model), cache) == "c" * 64
    model.write_bytes(b"GGUF" + bytes(999))  # another content: hashed again
    os.utime(model, ns=(1, 1))
    assert model_file.sha256_of(str(model), cache) == hashlib.sha256(
        model.read_bytes()).hexdigest()


def _model_on_host(path: str):
    fact = ModelOnHost()
    out = subprocess.run(["sh", "-c", fact.command(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return fact.process(out.stdout.splitlines())


def test_the_hosts_model_fact_sizes_and_recognizes_what_is_there(tmp_path):
    gguf = tmp_path / "it's.gguf"  # a quote in the name is quoted
    gguf.write_bytes(b"GGUF" + bytes(3 * 2**20))
    assert _model_on_host(str(gguf)) == (4, "gguf")
    other = tmp_path / "m.bin"
    other.write_bytes(b"\x00\xffPK" + bytes(10))
    assert _model_on_host(str(other)) == (1, "other")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert _model_on_host(str(empty))[1] == "other"
    directory = tmp_path / "hf"
    directory.mkdir()
    (directory / "model.safetensors").write_bytes(bytes(2 * 2**20))
    assert _model_on_host(str(directory)) == (3, "directory")  # 2 MB + its own entry, rounded up
    link = tmp_path / "current"
    link.symlink_to(gguf)
    assert _model_on_host(str(link)) == (4, "gguf")  # sized through the link
    assert _model_on_host(str(tmp_path / "none")) is None


def test_the_hosts_model_fact_says_unreadable(tmp_path):
    """A model the deploy user may see but not read: sized, and named unreadable (the plan
    refuses it), not reported as another format."""
    shared = tmp_path / "shared"
    shared.mkdir()
    model = shared / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(2**20))
    model.chmod(0o000)
    fact = ModelOnHost()
    command = ["sh", "-c", fact.command(str(model))]
    if os.geteuid() == 0:  # root reads anything: ask as nobody, who can reach the directory
        for d in (tmp_path, *tmp_path.parents):
            d.chmod(d.stat().st_mode | 0o001)
        command = ["runuser", "-u", "nobody", "--"] + command
    out = subprocess.run(command, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert fact.process(out.stdout.splitlines()) == (2, "unreadable")


def test_the_servers_ports_leave_redis_and_flower_theirs_on_a_shared_host():
    facts = HostFacts(16384, 4, llm_model_mb=500, llm_model_format="gguf",
                      llm_model_sha256=DIGEST, **X86)
    data = {**MODEL, "llm_concurrency": 2, "llm_server_port": 6378, "flower": True}
    with pytest.raises(SettingsError, match="leave 6379 to Redis \\(redis_port=6379\\)"):
        plan_host("h", facts, data, ("broker", "llm"))
    with pytest.raises(SettingsError, match="leave 5555 to Flower"):
        plan_host("h", facts, {**data, "llm_server_port": 5554}, ("broker", "llm"))
    # the same ports on a host without the broker are free
    assert plan_host("h", facts, data, ("llm",)).llm.server.instances[1].port == 6379


def test_your_own_gpu_servers_and_a_planned_server_do_not_mix():
    """llm_gpu_api_urls would be ignored (each worker calls the server the plan runs)."""
    data = {"llm_model_host_path": "/srv/m", "llm_gpu_api_urls": ["http://10.0.0.5:8000/v1"]}
    assert "llm_gpu_api_urls=['http://10.0.0.5:8000/v1']" in refusal(
        data, gpus=(81920,), model_format="directory")
    assert llm({**data, "inference_server": "none"}, gpus=(81920,)).server is None
