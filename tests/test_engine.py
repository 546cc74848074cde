"""The engine against the fake OpenAI-compatible service, one worker in this process.

Waits are injected (recorded, never slept), so backoff is checked exactly and quickly.
"""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from generation import engine, services
from generation.clock import db_now
from generation.models import GenerationAttempt, Illustration, ProviderAccount, Run
from generation.selectors import project_progress

pytestmark = pytest.mark.django_db

Status = Illustration.Status


@pytest.fixture
def book(make_project, openai_settings):
    return make_project(pages=24)


def start(project):
    return services.generate_missing(project=project).run


def outcomes(job):
    return [(a.number, a.outcome, a.http_status) for a in job.attempts.order_by("number")]


@pytest.mark.parametrize("reply", ["402", "429_quota", "400_billing"])
def test_no_credits_halts_the_run_and_resume_finishes_exactly_the_missing(
    book, fake_openai, drain, reply
):
    fake_openai.default = reply
    run = start(book)

    assert drain(run.pk) == 1  # the halting call; nothing after it
    run.refresh_from_db()
    assert (run.state, run.halt_reason) == ("halted", "out_of_credits")
    assert "out of credits" in run.message and "press Resume" in run.message
    assert fake_openai.call_count == 1
    progress = project_progress(book)
    assert (progress.failed, progress.illustrated, progress.complete) == (0, 0, False)
    assert Illustration.objects.filter(status=Status.QUEUED).count() == 24
    halted_job = Illustration.objects.get(attempts__isnull=False)
    assert halted_job.attempts_made == 0  # the halting attempt does not count
    assert outcomes(halted_job)[0][1] == "out_of_credits"

    fake_openai.default = "ok"
    services.resume(project=book)
    assert drain(run.pk) == 24
    assert fake_openai.successes == 24
    assert project_progress(book).complete is True
    run.refresh_from_db()
    assert run.state == Run.State.FINISHED


def test_it_retries_503_with_full_jitter_backoff_and_records_every_attempt(
    book, fake_openai, drain
):
    fake_openai.script.extend(["503", "503"])
    run = start(book)
    waits = []
    drain(run.pk, waits=waits, limit=1)

    job = Illustration.objects.get(page__number=1)
    assert job.status == Status.COMPLETE
    assert outcomes(job) == [(1, "transient", 503), (2, "transient", 503), (3, "success", 200)]
    assert len(waits) == 2
    assert 0 <= waits[0] <= 2 and 0 <= waits[1] <= 4  # full jitter under 2 s, then 4 s
    assert job.attempts_made == 3
    first = job.attempts.get(number=1)
    assert first.error_code == "server_is_overloaded"
    assert first.duration_ms is not None and first.provider_request_id.startswith("req_")


def test_between_attempts_the_page_shows_retrying_with_its_next_try(book, fake_openai):
    fake_openai.script.extend(["503"])
    run = start(book)
    seen = []

    def sleep(seconds):
        seen.append(Illustration.objects.get(page__number=1))

    engine.run_next_job(run.pk, sleep=sleep)
    [during] = seen
    assert during.status == Status.RETRYING
    assert during.next_attempt_at > during.attempts.get(number=1).finished_at


def test_a_rate_limit_waits_at_least_its_retry_after(book, fake_openai, drain):
    fake_openai.script.append("429_rate")
    run = start(book)
    waits = []
    drain(run.pk, waits=waits, limit=1)
    assert len(waits) == 1 and waits[0] >= 3
    job = Illustration.objects.get(page__number=1)
    assert outcomes(job) == [(1, "rate_limited", 429), (2, "success", 200)]
    assert job.attempts.get(number=1).retry_after == 3.0


def test_a_retry_after_longer_than_a_worker_should_sleep_defers_the_job(
    book, fake_openai, drain, broker
):
    fake_openai.script.append("429_rate_long")
    run = start(book)
    waits = []
    engine.run_next_job(run.pk, sleep=waits.append)

    job = Illustration.objects.get(page__number=1)
    assert waits == []
    assert (job.status, job.attempts_made) == (Status.QUEUED, 0)  # waiting is not failing
    assert job.next_attempt_at >= db_now() + timedelta(seconds=590)
    drain(run.pk)
    # The cool-down belongs to the account: no worker calls for any page meanwhile, and
    # each page goes back to the queue with its next-try time instead of a worker sleeping.
    assert fake_openai.call_count == 1
    assert (
        Illustration.objects.filter(status=Status.QUEUED, next_attempt_at__isnull=False).count()
        == 24
    )

    # Ten minutes later, by the database's clock.
    ProviderAccount.objects.update(cooldown_until=db_now() - timedelta(seconds=1))
    result = services.sweep(now=db_now() + timedelta(seconds=601))
    assert result["reenqueued"] == 24
    assert broker.queue_size() == 24
    assert drain(run.pk) == 24
    assert Illustration.objects.filter(status=Status.COMPLETE).count() == 24


def test_a_rejected_prompt_fails_that_page_at_once_and_the_rest_complete(book, fake_openai, drain):
    fake_openai.rules.append(("meadow number 5.", "400_policy"))
    run = start(book)
    drain(run.pk)

    assert fake_openai.calls_for("meadow number 5.") == 1
    page5 = Illustration.objects.get(page__number=5)
    assert page5.status == Status.FAILED
    assert page5.failure_reason == "rejected"
    assert "safety system" in page5.error_message
    progress = project_progress(book)
    # Rejected, not failed: "Retry failed" would only send the refused prompt again.
    assert (progress.illustrated, progress.failed, progress.rejected) == (23, 0, 1)
    assert progress.complete is False
    run.refresh_from_db()
    assert run.state == Run.State.FINISHED  # the run is over; the project is not complete


def test_a_bad_key_halts_the_run_as_auth(book, fake_openai, drain):
    fake_openai.default = "401"
    run = start(book)
    assert drain(run.pk) == 1
    run.refresh_from_db()
    assert (run.state, run.halt_reason) == ("halted", "auth")
    assert "API key" in run.message
    assert project_progress(book).failed == 0


def test_a_hang_past_the_read_timeout_is_retried(book, fake_openai, drain, openai_settings):
    openai_settings.STUDIO_PROVIDER_TIMEOUT = 0.3
    fake_openai.script.append("hang")
    run = start(book)
    drain(run.pk, limit=1)
    job = Illustration.objects.get(page__number=1)
    assert [a[1] for a in outcomes(job)] == ["transient", "success"]
    assert "did not answer in time" in job.attempts.get(number=1).message


def test_broken_answers_are_retried_and_nothing_is_saved(
    book, fake_openai, drain, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    fake_openai.script.extend(["broken_json", "bad_b64", "not_image"])
    run = start(book)
    drain(run.pk, limit=1)
    job = Illustration.objects.get(page__number=1)
    assert job.status == Status.FAILED
    assert job.failure_reason == "exhausted"
    assert [a[1] for a in outcomes(job)] == ["transient"] * 3
    assert not job.image
    assert list(tmp_path.rglob("*.png")) == []
    drain(run.pk, limit=1)  # the next page succeeds: its picture is the only file
    assert len(list(tmp_path.rglob("*.png"))) == 1


def test_the_same_task_delivered_twice_makes_one_call(make_project, openai_settings, fake_openai):
    project = make_project(pages=1)
    run = start(project)
    assert engine.run_next_job(run.pk) is not None
    assert engine.run_next_job(run.pk) is None  # the duplicate delivery claims nothing
    assert fake_openai.call_count == 1


def test_an_outage_halts_the_run_instead_of_burning_every_attempt(
    book, fake_openai, drain, settings
):
    settings.STUDIO_OUTAGE_THRESHOLD = 6
    fake_openai.default = "503"
    run = start(book)
    drain(run.pk)
    run.refresh_from_db()
    assert (run.state, run.halt_reason) == ("halted", "outage")
    assert fake_openai.call_count == 6  # not 24 pages × 3 attempts
    assert "6 times in a row" in run.message
    # Page 1 used its three attempts; of page 2's three calls the halting one did not count.
    assert Illustration.objects.get(page__number=1).failure_reason == "exhausted"
    assert Illustration.objects.get(page__number=2).attempts_made == 2
    assert Illustration.objects.filter(status=Status.QUEUED).count() == 23

    fake_openai.default = "ok"
    services.resume(project=book)
    drain(run.pk)
    assert project_progress(book).illustrated == 23
    retried = services.retry_failed(project=book)
    assert retried.count == 1
    drain(retried.run.pk)
    assert project_progress(book).complete is True


def test_pause_keeps_the_queue_and_resume_picks_up(book, fake_openai, drain):
    run = start(book)
    drain(run.pk, limit=5)
    services.pause(project=book)
    assert drain(run.pk) == 0
    assert fake_openai.call_count == 5
    services.resume(project=book)
    assert drain(run.pk) == 19
    assert project_progress(book).complete is True


def test_stop_cancels_the_queue_keeps_the_work_and_generate_missing_finishes_it(
    book, fake_openai, drain
):
    run = start(book)
    drain(run.pk, limit=10)
    services.stop(project=book)
    run.refresh_from_db()
    assert run.state == Run.State.STOPPED
    assert drain(run.pk) == 0
    assert Illustration.objects.filter(status=Status.CANCELED).count() == 14
    assert project_progress(book).illustrated == 10

    again = services.generate_missing(project=book)
    assert again.count == 14 and again.run != run
    drain(again.run.pk)
    assert fake_openai.successes == 24
    assert project_progress(book).complete is True


def test_generate_this_page_next_moves_it_to_the_front(book, fake_openai, drain):
    run = start(book)
    assert services.prioritize(page=book.pages.get(number=17)).count == 1
    drain(run.pk, limit=1)
    assert fake_openai.calls[0]["prompt"].startswith("Page 17:")


def test_the_sweep_requeues_jobs_of_dead_workers_and_records_the_lost_call(book, broker):
    start(book)
    job = Illustration.objects.get(page__number=3)
    past = timezone.now() - timedelta(seconds=1)
    Illustration.objects.filter(pk=job.pk).update(
        status=Status.GENERATING, claimed_by="dead-worker", lease_expires_at=past
    )
    GenerationAttempt.objects.create(illustration=job, number=1, started_at=past)

    # Nothing was handed to the broker in this test, so every due job gets its task.
    assert services.sweep() == {
        "requeued": 1,
        "canceled": 0,
        "failed": 0,
        "completed": 0,
        "reenqueued": 24,
        "probes": 0,
    }
    job.refresh_from_db()
    assert (job.status, job.claimed_by) == (Status.QUEUED, "")
    assert job.attempts.get().outcome == GenerationAttempt.Outcome.LOST
    assert job.attempts_made == 1  # a lost call counts, so no job is reclaimed for ever
    assert broker.queue_size() == 24


def test_a_page_no_character_can_lend_a_picture_to_reads_no_characters(book, fake_openai):
    """Most books have no character pictures: preparing their calls reads no characters;
    the picture completes, and its ledger entry's day is the database clock's."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from generation.models import SpendEntry

    run = start(book)
    with CaptureQueriesContext(connection) as queries:
        job_id = engine.run_next_job(run.pk)
    sql = [query["sql"] for query in queries.captured_queries]
    assert not [text for text in sql if text.startswith('SELECT "studio_character"')]
    job = Illustration.objects.get(pk=job_id)
    assert job.status == Status.COMPLETE and job.references_sent == []
    entry = SpendEntry.objects.get(attempt_id=job.attempts.get().pk)
    assert entry.day == db_now().date()


@pytest.mark.skipif(
    connection.vendor != "sqlite",
    reason="the statements pinned are SQLite's (PostgreSQL also locks the project's row)",
)
def test_a_picture_from_an_instant_service_costs_a_worker_exactly_its_statements(
    make_project, openai_settings
):
    """What a worker's picture costs the database is counted, so that a new guard adding
    a statement is noticed (the overhead benchmark lost 4x its speed to such guards, one
    at a time). A test's transaction turns each atomic block into a savepoint."""
    run = start(make_project(pages=3))
    engine.run_next_job(run.pk)  # the first picture also builds what is kept per process
    with CaptureQueriesContext(connection) as queries:
        engine.run_next_job(run.pk)
    sql = [query["sql"] for query in queries.captured_queries]
    # The claim, one write transaction (SQLite's write lock, held about 3 ms):
    #   SAVEPOINT, SELECT runs with due jobs (fairness.candidates), UPDATE the job
    #   (claim), UPDATE its project's counter, UPDATE the run's turn (fairness.served),
    #   RELEASE;
    # SELECT the claimed job with what working it needs (engine._claimed);
    # UPDATE the job (start_attempt: the prompt sent), UPDATE its project's counter;
    # SELECT the account (accounts.admit); INSERT the attempt's row (the journal);
    # SAVEPOINT, UPDATE the attempt's row, SAVEPOINT, INSERT its ledger entry (a savepoint
    # of its own: a likely entry confirmed in place meets the unique key), RELEASE, RELEASE;
    # SELECT whether the account's outage count rose meanwhile (any success resets it;
    # a read, so the usual success takes no write lock);
    # UPDATE the job (complete), UPDATE its project's counter;
    # SELECT whether the run has active jobs left (settle_run only if not).
    assert len(sql) == 21, "\n".join(sql)
