"""A worker's liveness is its heartbeat: a job whose worker has been silent for three beats
reads "Waiting for the worker (last heard …)" in every tab, the live clusters take it back
within 30 s of its last beat (every few seconds, not on the minute schedule), and the
reclaim never takes a call whose worker still beats, nor pays for one twice."""

import io
import os
import re
import signal
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from PIL import Image

from generation import engine, liveness, services
from generation.clock import db_now
from generation.kinds import KINDS
from generation.models import GenerationAttempt, Illustration, SpendEntry
from studio.models import Project
from tests.conftest import charges_and_entries, openai_env, wait_until

HTMX = {"HX-Request": "true"}
Status = Illustration.Status
WORKING = (Status.GENERATING, Status.RETRYING)
BEAT = 1.0  # seconds: STUDIO_HEARTBEAT_SECONDS in these tests (5 by default)


def poll_url(html: str) -> str:
    return re.search(r'data-poll hx-get="([^"]+)"', html).group(1).replace("&amp;", "&")


def detail(client, project) -> str:
    return client.get(reverse("project-detail", args=[project.pk])).content.decode()


def silent_cards(html: str) -> list[str]:
    return re.findall(r'title="(Waiting for the worker \(last heard \d\d:\d\d:\d\d\))"', html)


@pytest.fixture
def beats(settings):
    """The web side's settings, as the clusters these tests start have them."""
    settings.STUDIO_HEARTBEAT_SECONDS = BEAT
    settings.STUDIO_LEASE_SECONDS = 3 * BEAT
    return settings


@pytest.mark.django_db(transaction=True)
def test_a_killed_cluster_reads_waiting_for_the_worker_and_a_new_one_finishes_paying_once(
    client, editor, make_project, qcluster, fake_openai, beats
):
    project = make_project(pages=2, title="Killed Mid-Call")
    # Slow calls: the service holds both answers while the cluster is killed.
    env = openai_env(
        fake_openai, STUDIO_WORKERS=2, STUDIO_HEARTBEAT_SECONDS=BEAT, STUDIO_PROVIDER_TIMEOUT=60
    )
    fake_openai.hold()
    doomed = qcluster(**env)
    run = services.generate_missing(project=project).run
    wait_until(lambda: fake_openai.in_flight == 2, timeout=60)
    client.force_login(editor)
    tab = poll_url(detail(client, project))  # a tab open on the book during the calls
    assert detail(client, project).count('title="Generating (attempt 1 of 3)"') == 2

    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=10)
    killed_at = db_now()
    leases = Illustration.objects.filter(run=run, status__in=WORKING)
    last_heard = max(leases.values_list("lease_expires_at", flat=True)) - timedelta(
        seconds=3 * BEAT
    )

    # No worker is left to take the jobs back; within 4 beats of the last one (20 s at the
    # default 5 s) no card says Generating, and the header counts nothing on its way.
    def all_silent() -> str | None:
        html = detail(client, project)
        return html if len(silent_cards(html)) == 2 else None

    html = wait_until(all_silent, timeout=30)
    seen_at = db_now()
    assert (seen_at - last_heard).total_seconds() <= 4 * BEAT + 0.5
    assert "chip--generating" not in html and "Generating (" not in html
    assert "on their way" not in html
    assert "2 waiting for the worker" in html
    # The tab open before hears it at its next poll, header and cards in one answer.
    answer = client.get(tab, headers=HTMX)
    assert answer.status_code == 200
    body = answer.content.decode()
    assert len(silent_cards(body)) == 2
    assert "2 waiting for the worker" in body

    # A new cluster takes the jobs back by itself (no sweep from here), and finishes them.
    fake_openai.release()  # the dead workers' answers go to closed sockets: charged, unread
    started = db_now()
    qcluster(**env)
    lost = GenerationAttempt.objects.filter(illustration__run=run, outcome="lost")
    wait_until(lambda: lost.count() == 2, timeout=30)
    reclaimed_at = max(lost.values_list("finished_at", flat=True))
    wait_until(lambda: Illustration.objects.filter(status="complete").count() == 2, timeout=30)

    assert reclaimed_at - started < timedelta(seconds=15)  # cluster start-up and two beats
    assert killed_at <= reclaimed_at
    # Never paid twice: every call the service charged is in the ledger once, by its key,
    # and a page's lost call was sent again with the same key (a service that honours
    # idempotency keys charges each page once).
    wait_until(lambda: fake_openai.in_flight == 0, timeout=10)
    charged, entered = charges_and_entries(fake_openai, project)
    assert charged == entered
    assert sorted(charged.values()) == [2, 2]  # the lost call, and its resend
    keys_per_page = Counter(c["prompt"] for c in fake_openai.calls)
    assert sorted(keys_per_page.values()) == [2, 2]
    for prompt in keys_per_page:
        assert len({c["idempotency_key"] for c in fake_openai.calls if c["prompt"] == prompt}) == 1


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


@pytest.mark.django_db
def test_a_tab_hears_of_a_silent_worker_at_its_next_poll_and_a_quiet_poll_stays_one_query(
    client, editor, make_project, beats
):
    project = make_project(pages=2)
    services.generate_missing(project=project)
    job = Illustration.objects.order_by("page__number").first()
    claimed(job, lease=2)  # heard a beat ago: silent for three beats in two seconds
    client.force_login(editor)
    url = poll_url(detail(client, project))

    with CaptureQueriesContext(connection) as captured:
        quiet = client.get(url, headers=HTMX)
    assert quiet.status_code == 204
    assert [q["sql"] for q in captured if "studio_project" in q["sql"]] == [captured[-1]["sql"]]
    assert len(captured) <= 2  # the session's row, and the project's version

    wait_until(lambda: Illustration.objects.expired().exists(), timeout=5)
    answer = client.get(url, headers=HTMX)  # the project's version has not moved
    assert Project.objects.get(pk=project.pk).version == int(re.search(r"v=(\d+)", url)[1])
    assert answer.status_code == 200
    body = answer.content.decode()
    assert len(silent_cards(body)) == 1
    assert f'id="page-{job.page_id}"' in body
    assert "1 waiting for the worker" in body
    # Nothing else goes silent until something changes: quiet again.
    assert client.get(poll_url(body), headers=HTMX).status_code == 204


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


@pytest.mark.django_db
def test_a_worker_heard_again_after_three_silent_beats_reads_generating_again(
    client, editor, make_project, beats
):
    project = make_project(pages=1)
    services.generate_missing(project=project)
    job = Illustration.objects.get()
    claimed(job, lease=-0.1, worker="slow:1:alive")  # silent for three beats
    client.force_login(editor)
    url = poll_url(detail(client, project))
    assert len(silent_cards(detail(client, project))) == 1
    before = Project.objects.get(pk=project.pk).version

    rows = Illustration.objects.filter(pk=job.pk)
    assert rows.renew(worker_id="slow:1:alive", lease=3 * BEAT) == 1  # its next beat

    # Unlike a beat of a live worker, this one shows: the card's words change back.
    assert Project.objects.get(pk=project.pk).version == before + 1
    assert rows.renew(worker_id="slow:1:alive", lease=3 * BEAT) == 1
    assert Project.objects.get(pk=project.pk).version == before + 1
    answer = client.get(url, headers=HTMX).content.decode()
    assert silent_cards(answer) == []
    assert 'title="Generating (attempt 1 of 3)"' in answer


# --- the process's beats ------------------------------------------------------------------


class Counted(liveness.Beating):
    """Counts its beats; the first `failures` of them raise, as a write to a busy
    database would."""

    def __init__(self, failures: int = 0):
        self.count, self.failures = 0, failures
        self.beaten = threading.Event()
        self.threads: set[str] = set()

    def beat(self) -> None:
        self.count += 1
        self.threads.add(threading.current_thread().name)
        if self.count <= self.failures:
            raise OSError("database is locked")
        if self.count >= self.failures + 2:
            self.beaten.set()


def test_blocks_share_one_beating_thread_a_failed_beat_beats_on_and_none_beats_after_its_block(
    settings,
):
    settings.STUDIO_HEARTBEAT_SECONDS, settings.STUDIO_LEASE_SECONDS = 0.1, 0.3
    before = threading.active_count()
    failing, steady = Counted(failures=2), Counted()
    with failing, steady:
        assert failing.beaten.wait(10) and steady.beaten.wait(10)
        assert threading.active_count() <= before + 1  # one thread beats for both
    left_at = (failing.count, steady.count)
    with Counted() as third:  # a later block: its beat is due one beat on, like any
        assert third.beaten.wait(10)
    assert (failing.count, steady.count) == left_at  # nothing beat for a block left
    assert failing.threads == steady.threads == third.threads == {"beats"}
