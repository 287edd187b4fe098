"""What `fleet status` reads on a worker host. The controller runs it over SSH as the service
user, through env-exec with the worker's .env file (so it has the broker URL):

    python -m fleet_worker.hoststatus [--fleet] UNIT...

and reads one JSON object from stdout:

    {"memory_mb": {unit: MB or null},       psutil: PSS of the unit's main process and children
     "gpus": [{index, util_pct, memory_used_mb, memory_total_mb, processes: [{pid, memory_mb}]}],
     "gpu_source": "nvml" | "nvidia-smi" | "", "gpu_problem": str,
     with --fleet, once per fleet:
     "workers": {node: {implementation, concurrency, active, reserved, queues, pid}},
     "queues": {name: waiting}, "unacked": n, "redis": {used_mb, maxmemory_mb}}
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

import psutil

from .config import EMBEDDING_QUEUE, LLM_QUEUE

MB = 2**20
WORKER_QUEUES = (EMBEDDING_QUEUE, LLM_QUEUE)  # the reference app's; consumed ones are added
INSPECT_TIMEOUT_S = 1.0  # Celery's default: how long each broadcast waits for replies


def unit_memory_mb(unit: str) -> float | None:
    """Memory of a unit's main process and its children (prefork pool children): PSS, so
    pages they share count once, as the unit's cgroup counts them; RSS where PSS is denied."""
    out = subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", unit],
                         capture_output=True, text=True).stdout.strip()
    if not out.isdigit() or out == "0":
        return None
    try:
        root = psutil.Process(int(out))
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    total = 0
    for process in processes:
        try:
            try:
                total += process.memory_full_info().pss
            except psutil.AccessDenied:
                total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return round(total / MB, 1)


def gpus_from_nvml() -> list[dict]:
    import pynvml  # nvidia-ml-py: needs the driver's libnvidia-ml.so

    pynvml.nvmlInit()
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            processes = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
            gpus.append({
                "index": index,
                "util_pct": pynvml.nvmlDeviceGetUtilizationRates(handle).gpu,
                "memory_used_mb": round(memory.used / MB),
                "memory_total_mb": round(memory.total / MB),
                "processes": [{"pid": p.pid, "memory_mb": round((p.usedGpuMemory or 0) / MB)}
                              for p in processes],
            })
        return gpus
    finally:
        pynvml.nvmlShutdown()


def gpus_from_nvidia_smi() -> list[dict]:
    result = subprocess.run(["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used,"
                             "memory.total", "--format=csv,noheader,nounits"],
                            capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"nvidia-smi exit {result.returncode}: "
                           f"{(result.stdout + result.stderr).strip()[:200]}")
    gpus = []
    for line in result.stdout.strip().splitlines():
        index, util, used, total = (field.strip() for field in line.split(","))
        gpus.append({"index": int(index), "util_pct": int(util), "memory_used_mb": int(used),
                     "memory_total_mb": int(total), "processes": []})
    return gpus


def gpu_status() -> dict:
    """NVML first (utilisation, memory, and which processes hold memory); nvidia-smi where the
    NVML library cannot be loaded; a host with neither has no GPU to report."""
    problems = []
    try:
        return {"gpus": gpus_from_nvml(), "gpu_source": "nvml", "gpu_problem": ""}
    except Exception as error:  # NVMLError_LibraryNotFound on a host without the driver
        problems.append(f"NVML: {error}")
    if shutil.which("nvidia-smi") is None:
        return {"gpus": [], "gpu_source": "", "gpu_problem": ""}
    try:
        return {"gpus": gpus_from_nvidia_smi(), "gpu_source": "nvidia-smi", "gpu_problem": ""}
    except Exception as error:
        problems.append(str(error))
    return {"gpus": [], "gpu_source": "", "gpu_problem": "; ".join(problems)}


BINDING_PREFIX = "_kombu.binding."
BINDING_SEP = "\x06\x16"


def declared_queues(client) -> list[str]:
    """Every queue a producer or worker declared, from kombu's binding sets (SCAN: KEYS is
    disabled on the broker). A task sent to a queue no worker consumes (a typo in queue=)
    shows up here."""
    queues = set()
    for key in client.scan_iter(match=f"{BINDING_PREFIX}*", count=1000):
        exchange = key.decode()[len(BINDING_PREFIX):]
        if "pidbox" in exchange or exchange.startswith("celeryev"):
            continue  # Celery's control and event exchanges: not task queues
        for member in client.smembers(key):
            parts = member.decode().split(BINDING_SEP)
            if len(parts) == 3 and parts[2]:
                queues.add(parts[2])
    return sorted(queues)


def fleet_status() -> dict:
    """The broker's queues, and the workers as Celery sees them: asked once per fleet."""
    from .app import app

    with app.connection_for_read() as connection:
        channel = connection.default_channel
        client = channel.client
        unacked = client.hlen("unacked")
        info = client.info("memory")
        sizes = {}

        def size(name: str) -> int:
            # declaring writes nothing to Redis; kombu counts the queue's every priority
            # list (LLEN of one key would miss them)
            if name not in sizes:
                sizes[name] = channel.queue_declare(queue=name).message_count
            return sizes[name]

        for name in (*WORKER_QUEUES, *declared_queues(client)):
            size(name)
        # no limit on replies: a worker that is in no plan must be seen too
        inspect = app.control.inspect(timeout=INSPECT_TIMEOUT_S)
        stats = inspect.stats() or {}
        active = inspect.active() or {}
        reserved = inspect.reserved() or {}
        consumed = inspect.active_queues() or {}
        workers = {}
        for node, node_stats in stats.items():
            pool = node_stats.get("pool", {})
            workers[node] = {"implementation": pool.get("implementation"),
                             "concurrency": pool.get("max-concurrency"),
                             "active": len(active.get(node) or []),
                             "reserved": len(reserved.get(node) or []),
                             "queues": sorted(q["name"] for q in consumed.get(node) or []),
                             "pid": node_stats.get("pid")}
        for worker in workers.values():
            for name in worker["queues"]:
                size(name)
    return {"workers": workers, "queues": dict(sorted(sizes.items())), "unacked": unacked,
            "redis": {"used_mb": round(info["used_memory"] / MB, 1),
                      "maxmemory_mb": round(info.get("maxmemory", 0) / MB)}}


def main(argv: list[str]) -> int:
    fleet = "--fleet" in argv
    units = [a for a in argv if not a.startswith("--")]
    status = {"hostname": socket.gethostname(),
              "memory_mb": {unit: unit_memory_mb(unit) for unit in units}, **gpu_status()}
    if fleet:
        try:
            status.update(fleet_status())
        except Exception as error:  # Redis unreachable: say so, report the rest
            status["fleet_problem"] = f"{type(error).__name__}: {error}"
    print(json.dumps(status))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
