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

from datetime import datetime, timedelta

from django.conf import settings


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
