"""textjobs: a team's own Celery tasks (not celery-fleet's)."""
