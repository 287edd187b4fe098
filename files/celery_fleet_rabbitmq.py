"""Installed by celery-fleet (files/celery_fleet_rabbitmq.py) where the broker is RabbitMQ:
Celery's settings for the fleet's quorum queues, for any Celery application. The workers' and
clients' .env files name it in CELERY_CONFIG_MODULE, which Celery's loader reads before the
application's own settings (celery/loaders/base.py read_configuration): a plain
Celery("myapp") gets these; what the application sets itself wins. An application that calls
app.config_from_object() replaces them: it adds `from celery_fleet_rabbitmq import *` to its
own configuration module. docs/BROKERS.md says why each one.
"""

# Every queue Celery declares (the default one, and those -Q or task routes name) is a
# durable quorum queue: replicated on every broker of a cluster (Raft), it survives the loss
# of a minority of them; a delivery not acknowledged when its consumer's connection drops
# (a worker killed) is returned to the queue by the broker itself.
task_default_queue_type = "quorum"
task_create_missing_queue_type = "quorum"
# Quorum queues have no global QoS: Celery sees them and sets the prefetch per consumer. With
# them, ETA and countdown tasks go through RabbitMQ's native delayed delivery (Celery 5.5+,
# the exchanges celery_delayed_*), not held unacknowledged in a worker's memory.
worker_detect_quorum_queues = True
# Publisher confirms: apply_async() returns once the broker has the message (on a majority
# of a cluster's nodes), not when it left this process
broker_transport_options = {"confirm_publish": True}
# Tasks are acknowledged after they ran (the fleet's workers also set it): a worker killed
# mid-task leaves the task queued
task_acks_late = True
task_reject_on_worker_lost = True
# Keep trying the next broker of the failover list at start and after losing one
broker_connection_retry_on_startup = True
broker_connection_max_retries = None
