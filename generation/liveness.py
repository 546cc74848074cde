"""Liveness: workers beat, and a job whose worker falls silent is seen and taken back.

- A worker that holds a job renews its lease every beat (`beat_seconds`, at most
  STUDIO_HEARTBEAT_SECONDS): while its call is in flight (engine.Heartbeat), between
  attempts and while it waits for a slot. The lease is three beats long.
- A job whose lease ran out (its worker silent for three beats) reads "Waiting for the
  worker (last heard 14:32:05)" (`last_heard`), and every open tab hears of it at its next
  poll: the header carries the moment the next lease runs out (studio.views.review).
- Every live cluster sweeps (services.sweep, whose reclaim takes such jobs back with a
  compare-and-set on the lease) every beat (generation.sweeper). At the default 5 s beat
  a silent worker's job is back in the queue 15 to 23 s after its last beat. django-q2's
  schedule (once a minute) stays as a backstop only.
"""

import logging
import threading
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)


def beat_seconds() -> float:
    """Return how often a worker renews its lease, and the clusters sweep: every
    STUDIO_HEARTBEAT_SECONDS, and at least three times a lease (a short lease set on its
    own, as tests do, still outlives three beats)."""
    lease = float(settings.STUDIO_LEASE_SECONDS)
    return max(0.1, min(float(settings.STUDIO_HEARTBEAT_SECONDS), lease / 3))


def last_heard(lease_expires_at: datetime | None) -> datetime | None:
    """Return when the worker holding a job last renewed its lease (a lease is set one
    lease length ahead at every beat)."""
    if lease_expires_at is None:
        return None
    return lease_expires_at - timedelta(seconds=float(settings.STUDIO_LEASE_SECONDS))


class Beating:
    """Calls beat() every beat, in a thread of its own (with its own database connection),
    while a with-block runs: a lease renewed while a call or a step is in flight.

    Every beat stands alone: one failed write (the database busy or cut off for a moment)
    is logged and must not end the renewals for the rest of the block, or the sweep would
    hand the work to a second worker. A lease outlasts three beats.
    """

    name = "beat"

    def beat(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=self.name)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()

    def _run(self) -> None:
        try:
            while not self.stopped.wait(beat_seconds()):
                try:
                    self.beat()
                except Exception:
                    logger.exception("%s: a beat failed; beating on", self)
                    connection.close()  # a broken connection is opened anew next beat
        finally:
            connection.close()
