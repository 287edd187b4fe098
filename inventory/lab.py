"""pyinfra inventory of the running lab (`fleet lab up`).

    pyinfra inventory/lab.py deploy.py
    FLEET_LAB_INSTANCE=test pyinfra inventory/lab.py fact hardware.Memory

Groups: brokers, embedding_workers, llm_workers, celery_clients, from each lab host's roles.
"""

import os

from celery_fleet.lab import DEFAULT_INSTANCE, Lab
from celery_fleet.lab.inventory import inventory_groups

_instance = os.environ.get("FLEET_LAB_INSTANCE", DEFAULT_INSTANCE)
_state = Lab(instance=_instance).load_state()
if not _state:
    raise SystemExit(f"inventory/lab.py: lab {_instance!r} is not up; run `fleet lab up` first "
                     "(as root), or set FLEET_LAB_INSTANCE to the lab you brought up")

globals().update(inventory_groups(_state))  # brokers, embedding_workers, ... celery_clients
