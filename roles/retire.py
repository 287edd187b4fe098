"""A host leaving the fleet (inventory group `retired`): everything celery-fleet put there goes,
so that the host is as before the fleet came, but for the packages apt installed (python3-venv,
nftables: other software may use them).

Workers stop with Celery's warm shutdown (running tasks finish, prefetched ones go back to the
queue) before their units go. A host that runs our Redis is refused at plan time (its queues
would be lost): celery_fleet/fleetplan.py.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File, FindFiles
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from celery_fleet import layout
from celery_fleet.settings import Settings

from .celery_client import retire_client
from .flower import retire_flower
from .units import retire_worker, retire_worker_group

# units of ours beside the workers', each with its drop-ins; stopping the firewall's deletes
# its nftables table (a former broker whose Redis was removed by hand)
OTHER_UNITS = (layout.FAKE_OPENAI_UNIT, layout.FIREWALL_UNIT)


@deploy("Retire this host from the fleet")
def retire_host(settings: Settings) -> None:
    retire_worker(layout.EMBEDDING_PREFIX)
    retire_worker(layout.LLM_PREFIX)
    retire_worker(layout.LLM_SERVER_PREFIX)
    retire_worker_group()
    retire_flower()
    retire_client()
    for unit in OTHER_UNITS:
        if host.get_fact(File, path=layout.unit_path(unit)):
            systemd.service(name=f"Stop and disable {unit}", service=unit, running=False,
                            enabled=False)
    removed = []
    for unit in (layout.EMBEDDING_UNIT, layout.LLM_UNIT, layout.LLM_SERVER_UNIT, *OTHER_UNITS):
        removed.append(files.file(name=f"Remove {unit}", path=layout.unit_path(unit),
                                  present=False))
        removed.append(files.directory(name=f"Remove {unit}'s drop-ins",
                                       path=layout.dropin_dir(unit), present=False))
    systemd.daemon_reload(name="Reload systemd (our units are gone)", _if=any_changed(*removed))
    for path, what in ((settings["install_dir"], "the virtualenvs and the application"),
                       (layout.CONFIG_DIR, "the workers' settings"),
                       (layout.HELPER_DIR, "the helper scripts"),
                       (layout.DATA_DIR, "the models uploaded for the inference server"),
                       (f"/var/cache/{layout.LLM_SERVER_CACHE}", "the inference servers' "
                        "caches")):
        files.directory(name=f"Remove {path} ({what})", path=path, present=False)
    certificates = host.get_fact(FindFiles, path=layout.CA_CERT_DIR, maxdepth=1,
                                 fname=f"{layout.CA_CERT_PREFIX}*.crt")
    for path in certificates or []:
        files.file(name=f"Remove {path}", path=path, present=False)
    if certificates:
        # --fresh: the bundle's links to the removed certificates go too (without it they
        # stay, dangling, in /etc/ssl/certs)
        server.shell(name="Rebuild the system CA bundle",
                     commands=["update-ca-certificates --fresh"])
    user = settings["service_user"]
    server.user(name=f"Remove the service user {user}", user=user, present=False)
    server.group(name=f"Remove the group {user}", group=user, present=False)
