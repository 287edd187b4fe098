"""The lab's host image (celery_fleet/lab/image.py): built once, whoever asks at the same time."""

import subprocess
import sys

# Image.ensure in a process of its own, with a build that takes a moment and notes each run
ENSURE = """
import sys, time
from pathlib import Path
from celery_fleet.lab.image import Image

def build(self, rootfs, say):
    with open(sys.argv[2], "a") as runs:
        runs.write("build\\\\n")
    time.sleep(1)
    (rootfs / "lib/systemd").mkdir(parents=True)
    (rootfs / "lib/systemd/systemd").write_text("")

Image._build = build
print(Image(Path(sys.argv[1]), "http://mirror.invalid/debian", "trixie").ensure(print))
"""


def test_two_labs_of_one_release_coming_up_at_once_build_its_image_once(tmp_path):
    """The second waits for the first's image: building its own would replace the rootfs
    under the first lab's hosts (it is their overlays' lower layer)."""
    runs = tmp_path / "builds"
    ups = [subprocess.Popen([sys.executable, "-c", ENSURE, str(tmp_path / "cache"), str(runs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for _ in range(2)]
    outputs = [up.communicate(timeout=60) for up in ups]
    assert [up.returncode for up in ups] == [0, 0], outputs
    assert sorted(out.split()[-1] for out, _ in outputs) == ["built", "cached"], outputs
    assert runs.read_text().count("build") == 1
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == \
        [next(p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith("rootfs-"))]
