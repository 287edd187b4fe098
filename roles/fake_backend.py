"""The fake OpenAI-compatible API on a lab host (fake_openai_backend: true), so end-to-end
tests run real embedding and generation tasks without a model."""

from __future__ import annotations

from pathlib import Path

from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from celery_fleet import render
from celery_fleet.fleet import HostDeploy


@deploy("Fake OpenAI API (lab)")
def fake_backend(d: HostDeploy) -> list:
    files.directory(name="Ensure the helper directory exists",
                    path=str(Path(render.FAKE_OPENAI_SCRIPT).parent), user="root",
                    group="root", mode="755")
    script = files.put(name="Install the fake OpenAI API",
                       src=str(render.FILES_DIR / "fake_openai_server.py"),
                       dest=render.FAKE_OPENAI_SCRIPT, mode="755")
    unit = files.template(
        name="Render the fake OpenAI API unit",
        src=str(render.TEMPLATES_DIR / f"{render.FAKE_OPENAI_UNIT}.j2"),
        dest=f"{render.UNIT_DIR}/{render.FAKE_OPENAI_UNIT}", mode="644",
        **render.fake_openai_unit(d))
    reload = systemd.daemon_reload(name="Reload systemd (a unit file changed)",
                                   _if=unit.did_change)
    restart = systemd.service(name="Restart the fake OpenAI API (its files changed)",
                              service=render.FAKE_OPENAI_UNIT, running=True, restarted=True,
                              _if=lambda: script.did_change() or unit.did_change())
    running = systemd.service(name="Ensure the fake OpenAI API runs", service=
                              render.FAKE_OPENAI_UNIT, running=True, enabled=True)
    return [script, unit, reload, restart, running]
