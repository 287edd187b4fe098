"""Everything a lab can leave on the machine, to prove `down` leaves none of it."""

import json
import os
import subprocess
from pathlib import Path


def _lines(*args: str) -> list[str]:
    result = subprocess.run(args, capture_output=True, text=True)
    return sorted(result.stdout.split("\n")) if result.returncode == 0 else []


def _cgroups_named(prefix: str) -> list[str]:
    """Cgroup directories whose name starts with prefix, at any depth. os.walk skips a
    directory that vanishes while it looks (a host's session scope ending): Path.glob raised
    FileNotFoundError then (seen once in CI)."""
    return [os.path.join(root, name) for root, dirs, _ in os.walk("/sys/fs/cgroup")
            for name in dirs if name.startswith(prefix)]


def machine_footprint(lab_dir: Path) -> dict:
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True,
                                      text=True).stdout)
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    cgroups = sorted(_cgroups_named("celery-fleet"))
    return {
        "links": sorted(link["ifname"] for link in links),
        "netns": _lines("ip", "netns", "list"),
        "nft tables": _lines("nft", "list", "tables"),
        "mounts": sorted(m for m in mounts if "celery-fleet" in m or m.startswith("/run/netns")),
        "cgroups": cgroups,
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        "lab dir exists": lab_dir.exists(),
    }
