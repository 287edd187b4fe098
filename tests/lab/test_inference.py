"""The inference server the plan runs (issue #13), on the lab: real llama.cpp on cpu-small
serving a real llama-architecture GGUF (random weights, celery_fleet/lab/tiny_gguf.py), and a
vLLM server per GPU on gpu-box, where the lab's fake `vllm` (celery_fleet/lab/fake_vllm)
checks the flags the plan renders. Generations go through Celery end to end."""

import json
import re
import shlex

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
        # the model arrived whole
        assert lab.ssh("cpu-small", f"sha256sum {layout.MODEL_DIR}/lab-tiny.gguf").stdout \
            .split()[0] == __import__("hashlib").sha256(model.read_bytes()).hexdigest()

        only_worker(lab, "cpu-small", cpu_worker, ("gpu-box", gpu_worker))
        texts = generations(lab, 4, tokens=24)
        assert all(text and WORDS.fullmatch(text.strip()) for text in texts), texts
        assert not any(text.startswith("[gpu") for text in texts)
        served = lab.ssh("cpu-small", "journalctl -u celery-fleet-llm-server@cpu -o cat "
                         "--no-pager | grep -c 'POST /v1/completions HTTP/1.1\" 200' || true")
        assert int(served.stdout.strip()) >= 4 + 1  # the tasks and the deploy's check

        # gpu-box: one vLLM per GPU with the plan's flags (24 GB: 4 at once, 67 % of VRAM)
        only_worker(lab, "gpu-box", gpu_worker, ("cpu-small", cpu_worker))
        texts = generations(lab, 3, tokens=8)
        assert texts == [f"[gpu0 seqs=4 util=0.67 len=4096] prompt {i}" for i in range(3)]
    finally:
        lab.ssh("cpu-small", f"systemctl start {cpu_worker}")
        lab.ssh("gpu-box", f"systemctl start {gpu_worker}")
        deploy(lab)  # back to the lab's own fleet: the servers stop, the workers call the fake
    for host in ("cpu-small", "gpu-box"):
        left = lab.ssh(host, "systemctl list-units --no-legend --state=running "
                       "'celery-fleet-llm-server@*' || true").stdout
        assert left.strip() == "", left
