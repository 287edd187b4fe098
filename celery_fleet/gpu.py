"""GPU detection: the nvidia-smi query the GPU fact runs, and the pure parser of its answer.

No nvidia-smi, "No devices were found" and a failing driver are answers, not crashes: the plan
for such a host is a CPU plan, with the problem shown as a warning.
"""

from __future__ import annotations

from .sizing import Gpu

QUERY_FIELDS = "index,uuid,name,memory.total"
# Always exits 0: the first line says what happened, the rest is nvidia-smi's own output.
GPU_FACT_COMMAND = (
    "if ! command -v nvidia-smi >/dev/null 2>&1; then echo NVIDIA_SMI=absent; exit 0; fi; "
    f"out=$(nvidia-smi --query-gpu={QUERY_FIELDS} --format=csv,noheader,nounits 2>&1); "
    'echo "NVIDIA_SMI=exit:$?"; printf "%s\\n" "$out"'
)
NO_DEVICES_EXIT = 6  # nvidia-smi: "No devices were found"


def parse_gpu_fact(lines: list[str]) -> dict:
    """-> {"status": "absent"|"none"|"ok"|"error", "gpus": [...], "problem": str}."""
    lines = [line.strip() for line in lines if line.strip()]
    if not lines or not lines[0].startswith("NVIDIA_SMI="):
        return {"status": "error", "gpus": [], "problem": f"unexpected output: {lines[:2]!r}"}
    head, body = lines[0].split("=", 1)[1], lines[1:]
    if head == "absent":
        return {"status": "absent", "gpus": [], "problem": ""}
    code = int(head.split(":", 1)[1])
    if code == NO_DEVICES_EXIT or (code == 0 and not body):
        return {"status": "none", "gpus": [], "problem": ""}
    if code != 0:
        message = " ".join(body)[:200] or "no message"
        return {"status": "error", "gpus": [], "problem": f"nvidia-smi exit {code}: {message}"}
    gpus = []
    for line in body:
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 4 or not fields[0].isdigit() or not fields[3].isdigit():
            return {"status": "error", "gpus": [],
                    "problem": f"nvidia-smi answered something unexpected: {line[:120]!r}"}
        gpus.append({"index": int(fields[0]), "uuid": fields[1], "name": fields[2],
                     "vram_mb": int(fields[3])})
    return {"status": "ok", "gpus": gpus, "problem": ""}


def gpus_of(report: dict) -> tuple[tuple[Gpu, ...], str]:
    """The sizing core's view of a GPU fact: the GPUs, and the detection problem if any."""
    gpus = tuple(Gpu(g["index"], g["vram_mb"], g["name"], g["uuid"]) for g in report["gpus"])
    return gpus, report["problem"]
