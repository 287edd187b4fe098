"""The inference server the plan runs (issue #13), on the lab: real llama.cpp on cpu-small
serving a real llama-architecture GGUF (random weights, celery_fleet/lab/tiny_gguf.py), and a
vLLM server per GPU on gpu-box, where the lab's fake `vllm` (celery_fleet/lab/fake_vllm)
checks the flags the plan renders. Generations go through Celery end to end."""

import hashlib
import json
import re
import shlex
import time

from celery_fleet import layout
from celery_fleet.lab import tiny_gguf

from .conftest import VENV, as_service_user, deploy, lab_inventory_with
from .test_operate import fleet_status

PORT = 8090  # the fake OpenAI API keeps 8080 for the embeddings
GPU_MODEL = "/srv/models/lab-model"  # a "model directory" already on gpu-box
SERVER_VENV = layout.llm_server_venv("/opt/celery-fleet")
SEND = r"""
import json
from fleet_worker.tasks import generate
results = [generate.delay(f"prompt {i}", max_tokens=TOKENS) for i in range(COUNT)]
print(json.dumps([r.get(timeout=300) for r in results]))
"""
WORDS = re.compile(r"[a-z0-9 ]+")  # the model's vocabulary (tiny_gguf.vocabulary)


def generations(lab, count: int, tokens: int) -> list[str]:
    script = SEND.replace("COUNT", str(count)).replace("TOKENS", str(tokens))
    out = as_service_user(lab, "cpu-small", f"{VENV}/python -c {shlex.quote(script)}",
                          timeout=600)
    return json.loads(out.strip().splitlines()[-1])


def only_worker(lab, host: str, unit: str, other: tuple[str, str]) -> None:
    """Route the llm queue to one host's worker: stop the other's (warm)."""
    lab.ssh(other[0], f"systemctl stop {other[1]}")
    lab.ssh(host, f"systemctl start {unit}")


def uploaded_model(model) -> str:
    """Where a model from the controller lies on a host: under its sha256."""
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    return f"{layout.MODEL_DIR}/{digest[:16]}/{model.name}"


def status_shows(lab, host: str, *lines: str, timeout: float = 30) -> str:
    """systemctl status celery-worker, once it shows every line (worker-states polls)."""
    deadline = time.monotonic() + timeout
    while True:
        out = lab.ssh(host, "systemctl status celery-worker --no-pager -n 20", check=False).stdout
        if all(line in out for line in lines) or time.monotonic() > deadline:
            return out
        time.sleep(1)


def test_real_llamacpp_and_per_gpu_vllm_serve_generations_through_celery(lab, deployed,
                                                                         tmp_path):
    model = tiny_gguf.write(tmp_path / "lab-tiny.gguf")
    lab.ssh("gpu-box", f"mkdir -p {GPU_MODEL} && echo weights > {GPU_MODEL}/model.safetensors")
    inventory = lab_inventory_with(tmp_path, {
        "cpu-small": {"llm_model_path": str(model), "llm_server_port": PORT,
                      "llm_context_size": 512, "llm_kv_cache_per_task_mb": 256},
        "gpu-box": {"llm_model_host_path": GPU_MODEL, "llm_server_port": PORT,
                    "llm_server_source": "celery_fleet/lab/fake_vllm"}})
    cpu_worker, gpu_worker = "celery-llm-worker@cpu", "celery-llm-worker@gpu0"
    try:
        result = deploy(lab, inventory)
        assert "Check each inference server answers with a real completion" in result["output"]
        # fleet status knows the servers as the plan's (it once called them strays)
        report = fleet_status(lab, inventory, "--json")
        assert report.returncode == 0, report.stdout + report.stderr
        assert {"celery-fleet-llm-server@cpu.service", "celery-fleet-llm-server@gpu0.service"} \
            <= {row["unit"] for h in json.loads(report.stdout)["hosts"] for row in h["units"]}
        # cpu-small: 1 core -> one llama.cpp server of 1 thread, its worker calls it
        argv = lab.ssh("cpu-small", "tr '\\0' ' ' < /proc/$(systemctl show -p MainPID "
                       "--value celery-fleet-llm-server@cpu)/cmdline").stdout
        assert "-m llama_cpp.server " in argv and f"--port {PORT} " in argv, argv
        assert "--n_threads 1 --n_threads_batch 1 --n_ctx 512" in argv, argv
        assert "active" == lab.ssh("cpu-small", "systemctl is-active "
                                   "celery-fleet-llm-server@cpu").stdout.strip()
        # the model arrived whole, under its sha256
        assert lab.ssh("cpu-small", f"sha256sum {uploaded_model(model)}").stdout.split()[0] \
            == hashlib.sha256(model.read_bytes()).hexdigest()
        # started means answering: a restart returns once the model is loaded and served
        answers = (f"{SERVER_VENV}/bin/python -c 'import urllib.request as u; "
                   f"u.urlopen(\"http://127.0.0.1:{PORT}/v1/models\", timeout=5)'")
        lab.ssh("cpu-small", f"systemctl restart celery-fleet-llm-server@cpu && {answers}")
        # systemctl status celery-worker shows the server beside its worker
        out = status_shows(lab, "cpu-small", "celery-fleet-llm-server@cpu.service: active "
                           "(running)", "celery-llm-worker@cpu.service: active (running)")
        assert "celery-fleet-llm-server@cpu.service: active (running)" in out, out

        only_worker(lab, "cpu-small", cpu_worker, ("gpu-box", gpu_worker))
        texts = generations(lab, 4, tokens=24)
        assert all(text and WORDS.fullmatch(text.strip()) for text in texts), texts
        assert not any(text.startswith("[gpu") for text in texts)
        served = lab.ssh("cpu-small", "journalctl -u celery-fleet-llm-server@cpu -o cat "
                         "--no-pager | grep -c 'POST /v1/completions HTTP/1.1\" 200' || true")
        assert int(served.stdout.strip()) >= 4 + 1  # the tasks and the deploy's check

        # gpu-box: one vLLM per GPU with the plan's flags (24 GB: 4 at once; 8 GB of weights
        # + 4 x 2 GB of KV cache + 2 GB of runtime = 75 % of VRAM)
        only_worker(lab, "gpu-box", gpu_worker, ("cpu-small", cpu_worker))
        texts = generations(lab, 3, tokens=8)
        assert texts == [f"[gpu0 seqs=4 util=0.75 len=4096] prompt {i}" for i in range(3)]

        # a new model: beside the old, never over the file the running server maps; the old
        # one goes once the server restarted on the new one
        lab.ssh("cpu-small", f"systemctl start {cpu_worker}")
        (tmp_path / "newer").mkdir()
        newer = tiny_gguf.write(tmp_path / "newer" / "lab-tiny.gguf", seed=1)
        inventory = lab_inventory_with(tmp_path, {
            "cpu-small": {"llm_model_path": str(newer), "llm_server_port": PORT,
                          "llm_context_size": 512, "llm_kv_cache_per_task_mb": 256},
            "gpu-box": {"llm_model_host_path": GPU_MODEL, "llm_server_port": PORT,
                        "llm_server_source": "celery_fleet/lab/fake_vllm"}})
        deploy(lab, inventory, "--limit", "cpu-small")
        assert lab.ssh("cpu-small", f"ls {layout.MODEL_DIR}").stdout.split() == [
            uploaded_model(newer).split("/")[-2]]
        argv = lab.ssh("cpu-small", "tr '\\0' ' ' < /proc/$(systemctl show -p MainPID "
                       "--value celery-fleet-llm-server@cpu)/cmdline").stdout
        assert f"--model {uploaded_model(newer)} " in argv, argv
    finally:
        lab.ssh("cpu-small", f"systemctl start {cpu_worker}")
        lab.ssh("gpu-box", f"systemctl start {gpu_worker}")
        deploy(lab)  # back to the lab's own fleet: the servers stop, the workers call the fake
    for host in ("cpu-small", "gpu-box"):
        left = lab.ssh(host, "systemctl list-units --no-legend --state=running "
                       "'celery-fleet-llm-server@*' || true").stdout
        assert left.strip() == "", left
    # and what they had is gone: the models (GBs), the server's virtualenv
    gone = lab.ssh("cpu-small", f"ls -d {layout.MODEL_DIR} {SERVER_VENV} 2>&1 || true").stdout
    assert gone.count("No such file or directory") == 2, gone
