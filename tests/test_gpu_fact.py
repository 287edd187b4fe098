"""The GPU fact's parser on nvidia-smi outputs of every kind, and the fake nvidia-smi of the lab
answering the fact's real command."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from celery_fleet.gpu import GPU_FACT_COMMAND, gpus_of, parse_gpu_fact
from celery_fleet.lab import fake_nvidia_smi
from celery_fleet.lab.host import gpu_config
from celery_fleet.lab.spec import HostSpec
from celery_fleet.sizing import HostFacts, plan_llm
from celery_fleet.settings import DEFAULTS

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"


def fixture(name):
    return parse_gpu_fact((FIXTURES / name).read_text().splitlines())


def test_no_nvidia_smi_means_no_gpus_and_no_problem():
    assert fixture("absent.txt") == {"status": "absent", "gpus": [], "problem": ""}


def test_no_devices_found_means_no_gpus_and_no_problem():
    assert fixture("no-devices.txt") == {"status": "none", "gpus": [], "problem": ""}


def test_one_gpu():
    report = fixture("one-a10g.txt")
    assert report["status"] == "ok"
    assert report["gpus"] == [{"index": 0, "uuid": "GPU-2f6a3a5e-8c1b-4a8e-9d3c-1c2b3a4d5e6f",
                               "name": "NVIDIA A10G", "vram_mb": 23028}]


def test_eight_gpus_plan_eight_pinned_instances():
    gpus, problem = gpus_of(fixture("eight-h100.txt"))
    assert len(gpus) == 8 and problem == "" and {g.vram_mb for g in gpus} == {81559}
    plan, warnings = plan_llm("h", HostFacts(1024 * 1024, 128, gpus), DEFAULTS)
    assert [i.gpu_index for i in plan.instances] == list(range(8)) and warnings == []


def test_mixed_gpus_each_get_their_own_concurrency():
    gpus, _ = gpus_of(fixture("mixed-4090-3060.txt"))
    # a 6 GB model: the 4090 (24 GB) holds 4 generations, the 3060 (12 GB) one beside the
    # server's runtime; the default 8 GB model leaves the 3060 no room for one
    plan, _ = plan_llm("h", HostFacts(65536, 16, gpus), {**DEFAULTS, "llm_model_vram_mb": 6000})
    assert [(i.name, i.concurrency) for i in plan.instances] == [("gpu0", 4), ("gpu1", 1)]
    plan, warnings = plan_llm("h", HostFacts(65536, 16, gpus), DEFAULTS)
    assert [i.name for i in plan.instances] == ["gpu0"] and "GPU 1" in warnings[0]


@pytest.mark.parametrize("name, problem", [
    ("driver-not-loaded.txt", "nvidia-smi exit 9: NVIDIA-SMI has failed because it couldn't "
                              "communicate with the NVIDIA driver"),
    ("driver-mismatch.txt", "nvidia-smi exit 18: Failed to initialize NVML: Driver/library "
                            "version mismatch"),
    ("memory-not-available.txt", "nvidia-smi answered something unexpected"),
])
def test_a_broken_driver_is_an_answer_with_the_problem(name, problem):
    report = fixture(name)
    assert report["status"] == "error" and report["gpus"] == []
    assert report["problem"].startswith(problem)


def test_garbage_is_an_error_not_a_crash():
    assert parse_gpu_fact([])["status"] == "error"
    assert parse_gpu_fact(["bash: syntax error"])["status"] == "error"


@pytest.mark.parametrize("mode, status", [("ok", "ok"), ("broken", "error"),
                                          ("mismatch", "error")])
def test_the_fact_command_against_the_lab_fake(tmp_path, mode, status):
    """The exact shell command of the fact, run with the lab's fake nvidia-smi on PATH."""
    config = tmp_path / "gpus.json"
    config.write_text(json.dumps(gpu_config(HostSpec("g", 8192, 2, (24576, 24576),
                                                     nvidia_smi=mode))))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "nvidia-smi"
    tool.write_text(Path(fake_nvidia_smi.__file__).read_text().replace(
        "#!/usr/bin/python3", f"#!{os.sys.executable}", 1))
    tool.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
               FAKE_NVIDIA_SMI_CONFIG=str(config))
    out = subprocess.run(["sh", "-c", GPU_FACT_COMMAND], capture_output=True, text=True, env=env)
    assert out.returncode == 0
    report = parse_gpu_fact(out.stdout.splitlines())
    assert report["status"] == status
    if status == "ok":
        assert [g["vram_mb"] for g in report["gpus"]] == [24576, 24576]
