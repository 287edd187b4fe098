pytest_plugins = ["celery_fleet.lab.pytest_plugin"]
