"""What `fleet status` reads on a host (files/fleet-hoststatus): GPUs through NVML, and
nvidia-smi where the NVML library cannot be loaded."""

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "files" / "fleet-hoststatus"
_loader = importlib.machinery.SourceFileLoader("fleet_hoststatus", str(SCRIPT))
hoststatus = importlib.util.module_from_spec(importlib.util.spec_from_loader(_loader.name,
                                                                             _loader))
_loader.exec_module(hoststatus)

MIB = 2**20


class FakeNvml(SimpleNamespace):
    """pynvml's calls, answering for two GPUs; one process holds memory on GPU 1."""

    def __init__(self, fail_init=None):
        super().__init__(shutdown=0)
        self.fail_init = fail_init

    def nvmlInit(self):
        if self.fail_init:
            raise self.fail_init

    def nvmlShutdown(self):
        self.shutdown += 1

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=(1000 + handle * 19000) * MIB, total=24576 * MIB)

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=[3, 87][handle])

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=4242, usedGpuMemory=18000 * MIB)] if handle else []


def test_gpus_are_read_through_nvml(monkeypatch):
    nvml = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    status = hoststatus.gpu_status()
    assert status["gpu_source"] == "nvml" and status["gpu_problem"] == ""
    assert status["gpus"] == [
        {"index": 0, "util_pct": 3, "memory_used_mb": 1000, "memory_total_mb": 24576,
         "processes": []},
        {"index": 1, "util_pct": 87, "memory_used_mb": 20000, "memory_total_mb": 24576,
         "processes": [{"pid": 4242, "memory_mb": 18000}]}]
    assert nvml.shutdown == 1


@pytest.fixture
def no_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(
        fail_init=RuntimeError("NVML Shared Library Not Found")))


def test_without_the_nvml_library_nvidia_smi_answers(no_nvml, monkeypatch, tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '0, 12, 2048, 24576'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    status = hoststatus.gpu_status()
    assert status["gpu_source"] == "nvidia-smi"
    assert status["gpus"] == [{"index": 0, "util_pct": 12, "memory_used_mb": 2048,
                               "memory_total_mb": 24576, "processes": []}]


def test_a_broken_driver_is_a_problem_and_a_host_without_gpus_is_not(no_nvml, monkeypatch,
                                                                      tmp_path):
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert hoststatus.gpu_status() == {"gpus": [], "gpu_source": "", "gpu_problem": ""}
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho \"NVIDIA-SMI has failed because it couldn't communicate "
                   "with the NVIDIA driver.\"\nexit 9\n")
    smi.chmod(0o755)
    problem = hoststatus.gpu_status()["gpu_problem"]
    assert problem.startswith("NVML: NVML Shared Library Not Found; nvidia-smi exit 9: "
                              "NVIDIA-SMI has failed")
