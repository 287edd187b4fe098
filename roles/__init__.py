"""pyinfra roles of celery-fleet: each module has one @deploy function, dispatched by
deploy.py from the host's inventory groups."""
