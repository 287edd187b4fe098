"""A host of yours that submits tasks (the celery_clients group): the broker's firewall admits
it, and it gets Celery's settings in /etc/celery-fleet-client.env, readable by the user its
application runs as. Nothing is installed: the application is yours."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import files

from celery_fleet import layout, render
from celery_fleet.fleetplan import PlannedHost

from .rendered import template


@deploy("Celery client")
def celery_client(h: PlannedHost) -> None:
    user = h.settings["client_user"]
    template(f"Render the broker's address for your application (0600, {user}: broker "
             "password)", layout.CLIENT_ENV, user=user, group="root", mode="600",
             **render.client_env(h))


@deploy("Remove the client settings (no longer in celery_clients)")
def retire_client() -> None:
    if host.get_fact(File, path=layout.CLIENT_ENV):
        files.file(name="Remove the broker's address (the host left celery_clients)",
                   path=layout.CLIENT_ENV, present=False)
