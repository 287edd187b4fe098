"""Benchmark of the lab (issue #2 targets): image build, `up` of the default hosts with the
image cached, and `down`. Prints figures; asserts nothing about time.

    sudo .venv/bin/python benchmarks/lab_cycle.py [--cycles 5] [--build]

--build also times an image build from nothing, in a temporary FLEET_LAB_HOME (about a minute
and a half, 73 MB of downloads from the Debian archive).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from celery_fleet.lab import DEFAULT_HOSTS_SPEC, Lab, parse_hosts
from celery_fleet.lab.image import Image, machine_mirror

TARGETS_S = {"image build": 180.0, "up (default hosts, image cached)": 15.0, "down": 5.0}


def timed(action) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--build", action="store_true", help="also time an image build")
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    if args.build:
        with tempfile.TemporaryDirectory(prefix="fleet-image-bench-") as home:
            image = Image(Path(home) / "image", machine_mirror())
            results["image build"] = [timed(lambda: image.ensure(lambda _: None))]
            shutil.rmtree(image.rootfs)
            results["image restore from tarball"] = [timed(lambda: image.ensure(lambda _: None))]
    lab = Lab("bench", subnet="10.77.9.0/24", say=lambda _: None)
    specs = parse_hosts(DEFAULT_HOSTS_SPEC)
    lab.up(specs)  # warm: the image is built or restored outside the timed cycles
    lab.down()
    for cycle in range(args.cycles):
        results.setdefault("up (default hosts, image cached)", []).append(timed(lambda: lab.up(specs)))
        results.setdefault("up again (no-op)", []).append(timed(lambda: lab.up(specs)))
        results.setdefault("down", []).append(timed(lab.down))
        up = results["up (default hosts, image cached)"][-1]
        print(f"cycle {cycle + 1}/{args.cycles}: up {up:.1f} s, down {results['down'][-1]:.1f} s",
              file=sys.stderr)
    print(f"\n{'phase':<30} {'runs':>4} {'min s':>7} {'median s':>9} {'max s':>7} {'target s':>9}")
    for phase, values in results.items():
        target = TARGETS_S.get(phase)
        print(f"{phase:<30} {len(values):>4} {min(values):>7.1f} {statistics.median(values):>9.1f}"
              f" {max(values):>7.1f} {target if target else '-':>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
