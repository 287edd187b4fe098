"""Everything a lab can leave on the machine, to prove `down` leaves none of it."""

import json
import subprocess
from pathlib import Path


def _lines(*args: str) -> list[str]:
    result = subprocess.run(args, capture_output=True, text=True)
    return sorted(result.stdout.split("\n")) if result.returncode == 0 else []


def machine_footprint(lab_dir: Path) -> dict:
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True,
                                      text=True).stdout)
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    cgroups = sorted(str(p) for p in Path("/sys/fs/cgroup").glob("**/celery-fleet*"))
    return {
        "links": sorted(link["ifname"] for link in links),
        "netns": _lines("ip", "netns", "list"),
        "nft tables": _lines("nft", "list", "tables"),
        "mounts": sorted(m for m in mounts if "celery-fleet" in m or m.startswith("/run/netns")),
        "cgroups": cgroups,
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        "lab dir exists": lab_dir.exists(),
    }
