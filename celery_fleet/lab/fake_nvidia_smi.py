#!/usr/bin/python3
"""A test double of `nvidia-smi` for lab hosts with simulated GPUs.

Installed as /usr/local/bin/nvidia-smi inside a lab host; it reads the host's simulated GPUs
from /etc/celery-fleet-lab/gpus.json (or $FAKE_NVIDIA_SMI_CONFIG) and answers the way the real
tool does for the queries the project makes:

    nvidia-smi --query-gpu=index,uuid,name,memory.total,... --format=csv[,noheader][,nounits]
    nvidia-smi -L
    nvidia-smi            (a short summary)

Modes: "ok", "broken" (driver not loaded: the real message, exit 9) and "mismatch"
(driver/library version mismatch: exit 18). Standard library only: the lab image has python3
and nothing else.
"""

import json
import os
import sys

CONFIG_PATH = "/etc/celery-fleet-lab/gpus.json"
DRIVER_VERSION = "550.54.15"
CUDA_VERSION = "12.4"

BROKEN_MESSAGES = {
    "broken": (
        9,
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
        "Make sure that the latest NVIDIA driver is installed and running.",
    ),
    "mismatch": (18, "Failed to initialize NVML: Driver/library version mismatch"),
}

# field -> (header unit, value function); unit None means the field has no unit
FIELDS = {
    "index": (None, lambda i, g: str(i)),
    "uuid": (None, lambda i, g: g["uuid"]),
    "gpu_uuid": (None, lambda i, g: g["uuid"]),
    "name": (None, lambda i, g: g["name"]),
    "gpu_name": (None, lambda i, g: g["name"]),
    "pci.bus_id": (None, lambda i, g: "00000000:%02X:00.0" % (0x10 + i)),
    "driver_version": (None, lambda i, g: DRIVER_VERSION),
    "memory.total": ("MiB", lambda i, g: str(g["vram_mb"])),
    "memory.used": ("MiB", lambda i, g: str(g.get("used_mb", 0))),
    "memory.free": ("MiB", lambda i, g: str(g["vram_mb"] - g.get("used_mb", 0))),
    "utilization.gpu": ("%", lambda i, g: str(g.get("utilization", 0))),
    "utilization.memory": ("%", lambda i, g: "0"),
    "temperature.gpu": (None, lambda i, g: "34"),
    "compute_cap": (None, lambda i, g: "8.9"),
    "count": (None, lambda i, g: str(g["_count"])),
}


def load_config():
    path = os.environ.get("FAKE_NVIDIA_SMI_CONFIG", CONFIG_PATH)
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {"mode": "broken", "gpus": []}


def query(gpus, fields_text, format_text):
    fields = [f.strip() for f in fields_text.split(",") if f.strip()]
    for field in fields:
        if field not in FIELDS:
            print('Field "%s" is not a valid field to query.' % field)
            print()
            return 2
    options = {o.strip() for o in format_text.split(",")}
    if "csv" not in options:
        print('"%s" is not a valid format.' % format_text)
        return 2
    with_units = "nounits" not in options
    if "noheader" not in options:
        print(", ".join(f + (" [%s]" % FIELDS[f][0] if FIELDS[f][0] else "") for f in fields))
    for index, gpu in enumerate(gpus):
        gpu = dict(gpu, _count=len(gpus))
        values = []
        for field in fields:
            unit, value_of = FIELDS[field]
            value = value_of(index, gpu)
            values.append(value + (" " + unit if unit and with_units else ""))
        print(", ".join(values))
    return 0


def summary(gpus):
    print("+" + "-" * 77 + "+")
    print("| NVIDIA-SMI %-14s Driver Version: %-14s CUDA Version: %-8s |"
          % (DRIVER_VERSION, DRIVER_VERSION, CUDA_VERSION))
    print("|" + "=" * 77 + "|")
    for index, gpu in enumerate(gpus):
        print("| %3d  %-40s %8dMiB / %8dMiB  |" % (
            index, gpu["name"][:40], gpu.get("used_mb", 0), gpu["vram_mb"]))
    print("+" + "-" * 77 + "+")
    return 0


def main(argv):
    config = load_config()
    mode = config.get("mode", "ok")
    if mode in BROKEN_MESSAGES:
        code, message = BROKEN_MESSAGES[mode]
        print(message)
        return code
    gpus = config.get("gpus", [])
    if not gpus:
        print("No devices were found")
        return 6
    query_fields = format_text = None
    for arg in argv:
        if arg.startswith("--query-gpu="):
            query_fields = arg.split("=", 1)[1]
        elif arg.startswith("--format="):
            format_text = arg.split("=", 1)[1]
        elif arg in ("-L", "--list-gpus"):
            for index, gpu in enumerate(gpus):
                print("GPU %d: %s (UUID: %s)" % (index, gpu["name"], gpu["uuid"]))
            return 0
    if query_fields is not None:
        if format_text is None:
            print("--format is required with --query-gpu")
            return 2
        return query(gpus, query_fields, format_text)
    return summary(gpus)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
