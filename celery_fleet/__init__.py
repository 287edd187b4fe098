"""celery-fleet: provision bare-metal hosts for Celery AI task queues, sized from their facts."""

__version__ = "0.1.0"
