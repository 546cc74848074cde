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
import os
import threading
import time
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
    """Calls beat() every beat while a with-block runs: a lease renewed while a call or a
    step is in flight. The beats of every block in a process run in one thread of their
    own (with its own database connection), started once (`_Beats`): starting and joining
    a thread for every call cost a worker more than the rest of an instant call.

    Every beat stands alone: one failed write (the database busy or cut off for a moment)
    is logged and must not end the renewals for the rest of the block, or the sweep would
    hand the work to a second worker. A lease outlasts three beats. No beat of a block
    runs after the block is left.
    """

    name = "beat"

    def beat(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        _beats().add(self)
        return self

    def __exit__(self, *exc) -> None:
        _beats().remove(self)


class _Beats:
    """The process's beating thread and the blocks it beats for, each with when its next
    beat is due (a beat is due one beat after the block began, then one after its last
    beat ended)."""

    def __init__(self):
        self.changed = threading.Condition()
        self.due: dict[Beating, float] = {}
        self.beating: Beating | None = None  # the block whose beat runs now
        self.thread: threading.Thread | None = None

    def add(self, block: Beating) -> None:
        with self.changed:
            self.due[block] = time.monotonic() + beat_seconds()
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, daemon=True, name="beats")
                self.thread.start()
            self.changed.notify_all()

    def remove(self, block: Beating) -> None:
        """Stop beating for the block, once a beat of it that runs now has ended."""
        with self.changed:
            self.due.pop(block, None)
            while self.beating is block:
                self.changed.wait()

    def _run(self) -> None:
        while True:
            with self.changed:
                while not (ready := self._ready()):
                    soonest = min(self.due.values(), default=time.monotonic() + 60)
                    self.changed.wait(max(0.0, soonest - time.monotonic()))
            try:
                for block in ready:
                    self._beat(block)
            finally:
                connection.close()  # opened anew at the next beat: no idle connection kept

    def _ready(self) -> list[Beating]:
        now = time.monotonic()
        return [block for block, at in self.due.items() if at <= now]

    def _beat(self, block: Beating) -> None:
        with self.changed:
            if block not in self.due:
                return  # its block ended meanwhile
            self.beating = block
        try:
            block.beat()
        except Exception:
            logger.exception("%s: a beat failed; beating on", block)
            connection.close()  # a broken connection is opened anew next beat
        finally:
            with self.changed:
                self.beating = None
                if block in self.due:
                    self.due[block] = time.monotonic() + beat_seconds()
                self.changed.notify_all()


_process_beats: _Beats | None = None
_process_lock = threading.Lock()


def _beats() -> _Beats:
    """Return this process's beats, started at the first block."""
    global _process_beats
    with _process_lock:
        if _process_beats is None:
            _process_beats = _Beats()
        return _process_beats


def _forget_in_child() -> None:
    """A forked child (a django-q2 worker) inherits no thread, and maybe a lock held at
    the fork: it starts its own beats."""
    global _process_beats, _process_lock
    _process_beats, _process_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)
