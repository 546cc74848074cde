"""The sweep every live cluster runs every beat (generation.liveness), beside its work.

Each worker process of a cluster starts a `Sweeper` thread (django-q2's post_spawn). The
processes of every cluster take turns through one compare-and-set on a row, so the studio
sweeps about once a beat however many clusters and workers run, and keeps sweeping while
any cluster lives. The sweep's reclaim never takes a job whose worker still beats: each
of its writes is a compare-and-set on the lease (generation.services.reclaim_expired).
"""

import logging
import random
import threading
from datetime import UTC, datetime

from django.db import connection
from django.db.models.functions import Now

from . import tasks
from .liveness import beat_seconds
from .models import Heartbeat, later

logger = logging.getLogger(__name__)

# The turn row's time before any process swept: long ago.
_NEVER = datetime(2000, 1, 1, tzinfo=UTC)


def take_sweep_turn(*, period: float) -> bool:
    """Return whether this process sweeps now: no process of any cluster has swept within
    `period` seconds, and this one won the compare-and-set that says it does (a read first,
    so that the processes that find the turn taken write nothing)."""
    due = Heartbeat.objects.filter(name=Heartbeat.SWEEP_TURN, at__lt=later(-period))
    return due.exists() and bool(due.update(at=Now()))


class Sweeper:
    """Sweeps every beat when its turn comes, in a daemon thread beside a worker process's
    tasks, with its own database connection. One fails, the next one tries again."""

    def __init__(self, *, period: float | None = None):
        self.period = period or beat_seconds()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="studio-sweeper")

    def start(self) -> "Sweeper":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()

    def _run(self) -> None:
        try:
            Heartbeat.objects.bulk_create(
                [Heartbeat(name=Heartbeat.SWEEP_TURN, at=_NEVER)], ignore_conflicts=True
            )
            # Looking twice a beat, at times spread over the processes, a turn is taken at
            # most 1.6 beats after the last.
            while not self.stopped.wait(self.period * random.uniform(0.4, 0.6)):
                try:
                    if take_sweep_turn(period=self.period):
                        tasks.sweep(every_run=False)
                except Exception:
                    logger.exception("The sweep failed; the next turn tries again")
                    connection.close()  # a broken connection is opened anew next time
        finally:
            connection.close()


def start_sweeper(**kwargs) -> None:
    """django-q2's post_spawn: a worker process of a cluster starts, and its sweeper with it."""
    Sweeper().start()
