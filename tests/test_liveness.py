"""A worker's liveness is its heartbeat: a job whose worker has been silent for three beats
reads "Waiting for the worker (last heard …)" in every tab, the live clusters take it back
within 30 s of its last beat (every few seconds, not on the minute schedule), and the
reclaim never takes a call whose worker still beats, nor pays for one twice."""

import io
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

from generation import engine, services
from generation.clock import db_now
from generation.kinds import KINDS
from generation.models import GenerationAttempt, Illustration, SpendEntry
from tests.conftest import wait_until

HTMX = {"HX-Request": "true"}
Status = Illustration.Status
WORKING = (Status.GENERATING, Status.RETRYING)
BEAT = 1.0  # seconds: STUDIO_HEARTBEAT_SECONDS in these tests (5 by default)


@pytest.fixture
def beats(settings):
    """The web side's settings, as the clusters these tests start have them."""
    settings.STUDIO_HEARTBEAT_SECONDS = BEAT
    settings.STUDIO_LEASE_SECONDS = 3 * BEAT
    return settings


def claimed(job: Illustration, *, lease: float, worker: str = "live:1:beating") -> None:
    Illustration.objects.filter(pk=job.pk).update(
        status=Status.GENERATING,
        claimed_by=worker,
        provider="openai",
        model="gpt-image-1",
        lease_expires_at=db_now() + timedelta(seconds=lease),
    )


@pytest.mark.django_db
def test_the_reclaim_never_takes_a_job_whose_heartbeat_is_fresh(make_project, beats, broker):
    project = make_project(pages=2)
    services.generate_missing(project=project)
    fresh, silent = Illustration.objects.order_by("page__number")
    claimed(fresh, lease=2 * BEAT)  # beat a beat ago
    claimed(silent, lease=-0.1, worker="dead:2:silent")  # silent for over three beats
    for job in (fresh, silent):
        GenerationAttempt.objects.create(
            illustration=job, number=1, started_at=db_now(), idempotency_key=f"k{job.pk}"
        )

    counts = services.sweep()

    assert counts["requeued"] == 1
    fresh.refresh_from_db()
    assert (fresh.status, fresh.claimed_by) == (Status.GENERATING, "live:1:beating")
    assert fresh.attempts.get().outcome == GenerationAttempt.Outcome.IN_FLIGHT
    assert not SpendEntry.objects.filter(attempt_id__in=fresh.attempts.values("pk")).exists()
    silent.refresh_from_db()
    assert (silent.status, silent.claimed_by) == (Status.QUEUED, "")
    assert silent.attempts.get().outcome == GenerationAttempt.Outcome.LOST


@pytest.mark.django_db
def test_a_worker_heard_again_before_the_reclaim_writes_keeps_its_job(
    make_project, beats, broker, settings
):
    """The reclaim read the job as silent; its worker beats before the reclaim writes: the
    write is a compare-and-set on the lease, so it takes nothing, not even the stored
    picture's completion."""
    project = make_project(pages=1)
    services.generate_missing(project=project)
    job = Illustration.objects.get()
    claimed(job, lease=-0.1, worker="slow:1:alive")
    listed = Illustration.objects.expired().select_related("page__project").get()
    name = f"illustrations/{project.pk}/stored.png"
    picture = io.BytesIO()
    Image.new("RGB", (64, 64), "orange").save(picture, "PNG")
    default_storage.save(name, ContentFile(picture.getvalue()))
    GenerationAttempt.objects.create(
        illustration=job,
        number=1,
        started_at=db_now(),
        idempotency_key="k1",
        storage_name=name,
    )
    # Heard again: its heartbeat renews the lease.
    assert Illustration.objects.filter(pk=job.pk).renew(worker_id="slow:1:alive", lease=3 * BEAT)

    assert engine.finish_from_journal(KINDS["illustration"], listed) is False
    assert services.reclaim_expired() == {"requeued": 0, "canceled": 0, "failed": 0, "completed": 0}
    job.refresh_from_db()
    assert (job.status, job.claimed_by) == (Status.GENERATING, "slow:1:alive")


@pytest.mark.django_db(transaction=True)
def test_the_live_clusters_sweep_every_beat_in_turns_and_take_a_silent_job_back(
    make_project, broker, settings, monkeypatch
):
    """Three worker processes' sweepers (threads here): one sweep a beat in all, and a job
    whose worker fell silent is back in the queue within 30 s of its last beat (scaled:
    six beats)."""
    import time

    from generation import sweeper, tasks

    beat = 0.5
    settings.STUDIO_HEARTBEAT_SECONDS, settings.STUDIO_LEASE_SECONDS = beat, 3 * beat
    swept = []
    real = tasks.sweep
    monkeypatch.setattr(
        tasks, "sweep", lambda **kwargs: swept.append(time.monotonic()) or real(**kwargs)
    )
    project = make_project(pages=1)
    services.generate_missing(project=project)
    job = Illustration.objects.get()
    claimed(job, lease=3 * beat, worker="dies:1:now")  # its last beat: now
    last_heard = db_now()

    threads = [sweeper.Sweeper().start() for _ in range(3)]
    try:
        wait_until(
            lambda: Illustration.objects.filter(pk=job.pk, status=Status.QUEUED).exists(),
            timeout=10,
            interval=0.05,
        )
        back_at = db_now()
        wait_until(lambda: len(swept) >= 6, timeout=10, interval=0.05)
    finally:
        for thread in threads:
            thread.stop()

    assert (back_at - last_heard).total_seconds() <= 6 * beat
    gaps = [later - earlier for earlier, later in zip(swept, swept[1:], strict=False)]
    assert min(gaps) >= 0.8 * beat, gaps  # in turns: never two sweeps within a beat
    assert max(gaps) <= 2 * beat + 0.5, gaps
