"""celery-fleet's reference Celery application (the deploy installs it unless the inventory's
worker_app_source names another)."""
