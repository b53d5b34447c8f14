"""Celery application. Without CELERY_BROKER_URL tasks run eagerly (the embedded default)."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("cir")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.setup_logging.connect
def _logging_from_settings(**_):
    """Workers log like the web processes (settings.LOGGING: JSON lines, redacted) instead of Celery's
    own format: a receiver here stops Celery from configuring logging itself."""
    from django.conf import settings
    from django.utils.log import configure_logging

    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)


def _connect_request_ids() -> None:
    """The request id travels with queued tasks (core/requestid.py)."""
    from core import requestid

    signals.before_task_publish.connect(requestid.on_before_publish, weak=False)
    signals.task_prerun.connect(requestid.on_prerun, weak=False)
    signals.task_postrun.connect(requestid.on_postrun, weak=False)


_connect_request_ids()
