"""The Celery app, configured from the settings: SQLite broker and backend by default."""

from __future__ import annotations

import logging
import os
import socket
from contextlib import AbstractContextManager
from datetime import timedelta

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from orchestrator.settings import SCORING_QUEUE, load_settings
from store import WORKER_LEASE_PREFIX

logger = logging.getLogger(__name__)

MODEL_TASKS = (
    "sentiloop.score",
    "sentiloop.score_shard",
    "sentiloop.score_collect",
    "sentiloop.retrain",
    "sentiloop.retrain_on_labels",
    "sentiloop.evaluate",
)


def make_app() -> Celery:
    settings = load_settings()
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    if settings.broker.startswith("sqla+"):
        # The SQLAlchemy transport polls; its 1 s default makes every round trip take a second.
        # (Passing polling_interval in broker_transport_options would reach create_engine.)
        from kombu.transport import sqlalchemy as kombu_sqla

        kombu_sqla.Transport.polling_interval = 0.05
    app = Celery("sentiloop", broker=settings.broker, backend=settings.backend)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_track_started=True,
        worker_prefetch_multiplier=1,
        task_acks_late=False,
        result_extended=True,
        result_expires=7 * 24 * 3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_max_tasks_per_child=50,
        beat_schedule={
            "sentiloop-cycle": {
                "task": "sentiloop.cycle",
                "schedule": settings.schedule_seconds,
                "kwargs": {"trigger": "beat"},
            },
            "sentiloop-labels": {
                "task": "sentiloop.on_labels",
                "schedule": settings.labels_check_seconds,
                "kwargs": {"trigger": "beat"},
            },
        },
        beat_schedule_filename=str(settings.home_dir / "celerybeat-schedule"),
        include=["orchestrator.tasks"],
        # model work (scoring, training, evaluation) goes to its own queue, so GPU workers
        # can take it while CPU workers take the Label Studio sync on the default queue
        task_routes={name: {"queue": SCORING_QUEUE} for name in MODEL_TASKS},
    )
    return app


app = make_app()

_WORKER_LEASE: AbstractContextManager[object] | None = None


@worker_ready.connect
def _announce(**_: object) -> None:
    """While a worker runs it holds a lease named after it (renewed every 7.5 s, gone 30 s
    after a crash, at once on this host): `sentiloop cycle` and `status --check` can tell
    that no worker is alive instead of waiting on a message nobody will take."""
    global _WORKER_LEASE
    from store import Store

    store = Store(load_settings().db_url)
    try:
        lease = store.lease(worker_lease_name(), ttl=timedelta(seconds=30))
        lease.__enter__()
    except Exception:  # the database may be down at start: the worker works without it
        logger.exception("could not announce this worker in the store")
        return
    _WORKER_LEASE = lease


@worker_shutdown.connect
def _retire(**_: object) -> None:
    if _WORKER_LEASE is not None:
        _WORKER_LEASE.__exit__(None, None, None)


def worker_lease_name() -> str:
    return f"{WORKER_LEASE_PREFIX}{socket.gethostname()}:{os.getpid()}"
