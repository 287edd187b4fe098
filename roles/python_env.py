"""Python on a host, for the workers and for Flower: CA certificates the hosts must trust, and
a virtualenv whose pip uses them (and the inventory's index)."""

from __future__ import annotations

from pathlib import Path

from pyinfra.operations import apt, files, pip, server
from pyinfra.operations.util import any_changed

from celery_fleet import layout, render
from celery_fleet.fleetplan import PlannedHost

from .rendered import template


def trust_certificates(h: PlannedHost) -> None:
    """python3-venv, the system CA bundle, and the inventory's extra_ca_certificates in it."""
    apt.packages(name="Install Python's venv module and the CA certificates",
                 packages=["python3-venv", "ca-certificates"], update=True, cache_time=86400)

    certificates = [
        files.put(name=f"Trust the CA certificate {Path(path).name}", src=path,
                  dest=f"{layout.CA_CERT_DIR}/{layout.CA_CERT_PREFIX}{Path(path).stem}.crt",
                  mode="644")
        for path in h.settings["extra_ca_certificates"]
    ]
    if certificates:
        server.shell(name="Rebuild the system CA bundle", commands=["update-ca-certificates"],
                     _if=any_changed(*certificates))


def python_venv(h: PlannedHost, venv: str) -> None:
    """A virtualenv whose pip trusts the system CA bundle and uses the inventory's index."""
    pip.venv(name=f"Ensure the virtualenv {venv} exists", path=venv, python="python3")
    template("Configure pip in the virtualenv (CA bundle, index)", f"{venv}/pip.conf",
             mode="644", **render.pip_conf(h))
