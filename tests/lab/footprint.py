"""Everything a lab can leave on the machine, to prove `down` leaves none of it.

The other labs running meanwhile (the other release's, under pytest-xdist) come and go: what is
named after another lab instance (lab.py: netns fleet-INSTANCE-*, veths flINSTANCE-N, bridge
flINSTANCE-br, nft table celery_fleet_INSTANCE, cgroups celery-fleet-INSTANCE-*, mounts under
its directory) is left out. Everything else on the machine is compared, this lab's own and
what belongs to no lab at all."""

import json
import os
import re
import subprocess
from pathlib import Path

from celery_fleet.lab.system import INOTIFY_INSTANCES

INSTANCE = r"[a-z][a-z0-9]{0,7}"
# what names a lab instance, in each kind of thing a lab makes
OWNERS = {
    "links": re.compile(rf"^fl({INSTANCE})-(?:br|\d+)$"),
    "netns": re.compile(rf"^fleet-({INSTANCE})-"),
    "nft tables": re.compile(rf"^table ip celery_fleet_({INSTANCE})$"),
    "cgroups": re.compile(rf"/celery-fleet-({INSTANCE})-"),  # the host's own, and all below
    "mounts": re.compile(rf"^/run/netns/fleet-({INSTANCE})-"),
}


def _lines(*args: str) -> list[str]:
    result = subprocess.run(args, capture_output=True, text=True)
    return sorted(result.stdout.split("\n")) if result.returncode == 0 else []


def _cgroups_named(prefix: str) -> list[str]:
    """Cgroup directories whose name starts with prefix, at any depth. os.walk skips a
    directory that vanishes while it looks (a host's session scope ending): Path.glob raised
    FileNotFoundError then (seen once in CI)."""
    return [os.path.join(root, name) for root, dirs, _ in os.walk("/sys/fs/cgroup")
            for name in dirs if name.startswith(prefix)]


def _owner(kind: str, entry: str, lab_home: Path) -> str | None:
    """The lab instance this entry belongs to, or None where it names none."""
    if kind == "mounts" and entry.startswith(f"{lab_home}/"):
        return entry[len(f"{lab_home}/"):].split("/", 1)[0]
    pattern = OWNERS.get(kind)
    match = pattern.search(entry) if pattern else None
    return match[1] if match else None


def machine_footprint(lab_dir: Path) -> dict:
    """The machine as this lab instance (lab_dir: LAB_HOME/INSTANCE) and no lab see it."""
    instance, lab_home = lab_dir.name, lab_dir.parent
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True,
                                      text=True).stdout)
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    found = {
        "links": sorted(link["ifname"] for link in links),
        "netns": _lines("ip", "netns", "list"),
        "nft tables": _lines("nft", "list", "tables"),
        "mounts": sorted(m for m in mounts if "celery-fleet" in m or m.startswith("/run/netns")),
        "cgroups": sorted(_cgroups_named("celery-fleet")),
    }
    footprint = {kind: [e for e in entries if _owner(kind, e, lab_home) in (None, instance)]
                 for kind, entries in found.items()}
    footprint["ip_forward"] = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    footprint["inotify instances"] = INOTIFY_INSTANCES.read_text().strip()
    footprint["lab dir exists"] = lab_dir.exists()
    return footprint
