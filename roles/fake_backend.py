"""The fake OpenAI-compatible API on a lab host (fake_openai_backend: true), so end-to-end
tests run real embedding and generation tasks without a model."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from celery_fleet import layout, render
from celery_fleet.fleetplan import PlannedHost

from .rendered import template


@deploy("Fake OpenAI API (lab)")
def fake_backend(h: PlannedHost) -> list:
    files.directory(name="Ensure the helper directory exists", path=layout.HELPER_DIR,
                    user="root", group="root", mode="755")
    script = files.put(name="Install the fake OpenAI API",
                       src=str(layout.FILES_DIR / "fake_openai_server.py"),
                       dest=layout.FAKE_OPENAI_SCRIPT, mode="755")
    unit = template("Render the fake OpenAI API unit", layout.unit_path(layout.FAKE_OPENAI_UNIT),
                    mode="644", **render.fake_openai_unit(h))
    reload = systemd.daemon_reload(name="Reload systemd (a unit file changed)",
                                   _if=unit.did_change)
    restart = systemd.service(name="Restart the fake OpenAI API (its files changed)",
                              service=layout.FAKE_OPENAI_UNIT, running=True, restarted=True,
                              _if=lambda: script.did_change() or unit.did_change())
    running = systemd.service(name="Ensure the fake OpenAI API runs",
                              service=layout.FAKE_OPENAI_UNIT, running=True, enabled=True)
    return [script, unit, reload, restart, running]
