"""Files the roles render: each from templates/<its destination's name>.j2 (STYLE.md 6), and
the sandbox drop-in every long-running unit of ours gets."""

from __future__ import annotations

from pyinfra.operations import files

from celery_fleet import layout, render


def template(name: str, dest: str, src: str | None = None, **arguments):
    """files.template from templates/<the destination's name>.j2 (STYLE.md 6)."""
    source = layout.TEMPLATES_DIR / (src or dest.rsplit("/", 1)[-1] + ".j2")
    return files.template(name=name, src=str(source), dest=dest, **arguments)


def sandbox(whose: str, unit: str, gpu: bool):
    """The hardening drop-in of a unit (templates/hardening.conf.j2). whose: "Flower's"."""
    files.directory(name=f"Ensure {whose} drop-in directory exists",
                    path=layout.dropin_dir(unit), mode="755")
    return template(f"Render {whose} sandbox (hardening drop-in)",
                    f"{layout.dropin_dir(unit)}/{layout.SANDBOX_DROPIN}", mode="644",
                    **render.hardening(unit, gpu=gpu))
