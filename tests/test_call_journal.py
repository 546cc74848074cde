"""The call journal: a row per call written before the request goes out, closed after, and
read by recovery and the ledger. Each test here reproduces a way the engine paid twice,
lost work or blamed the shared account before the journal (issue "Never pay twice, by
construction"), and failed on the engine before it.

Faults are injected at named steps of the engine (a worker killed, a database error), as a
real crash would leave them; the service is always the loopback fake, over HTTP.
"""

import io
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.files.base import ContentFile
from django.db import OperationalError, connection
from PIL import Image

from generation import engine, services
from generation.clock import db_now
from generation.kinds import KINDS
from generation.models import GenerationAttempt, Illustration, ProviderAccount, Run, SpendEntry
from generation.providers.replicate_image import ReplicateImageProvider
from studio.files import OrphanSearch
from studio.models import Character, ReferenceImage
from tests.conftest import wait_until

Status = Illustration.Status
Outcome = GenerationAttempt.Outcome
PRICE = {"openai:gpt-image-1": "0.04"}


class Killed(BaseException):
    """A worker killed at this step (kill -9): nothing after it runs, what was committed
    stays. A BaseException, so no `except Exception` of the engine's catches it."""


def start(project):
    return services.generate_missing(project=project).run


def kill_at(monkeypatch, owner, name: str, times: int = 1):
    """Make owner.name kill its worker the next `times` calls."""
    real = getattr(owner, name)
    left = {"kills": times}

    def step(*args, **kwargs):
        if left["kills"]:
            left["kills"] -= 1
            raise Killed(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, step)


def work_until_killed(run_id: int, drain) -> None:
    with pytest.raises(Killed):
        drain(run_id, limit=1)


def sweep_after_the_lease():
    """The sweep, once the killed worker's lease has run out."""
    return services.sweep(now=db_now() + timedelta(seconds=600))


def ledger() -> list[tuple[str, bool, Decimal]]:
    return [
        (entry.basis, entry.confirmed, entry.amount)
        for entry in SpendEntry.objects.order_by("attempt_id")
    ]


# --- a paid answer is never lost ---------------------------------------------------------


@pytest.mark.django_db
def test_a_worker_killed_after_storing_its_picture_is_finished_by_the_sweep_without_a_call(
    make_project, openai_settings, fake_openai, drain, monkeypatch
):
    openai_settings.STUDIO_PRICES = PRICE
    run = start(make_project(pages=1))
    kill_at(monkeypatch, KINDS["illustration"], "complete")
    work_until_killed(run.pk, drain)

    counts = sweep_after_the_lease()
    drain(run.pk)

    job = Illustration.objects.get()
    assert counts["completed"] == 1
    assert job.status == Status.COMPLETE and job.image
    assert fake_openai.call_count == 1
    assert ledger() == [("price", True, Decimal("0.04"))]
    assert job.attempts.get().outcome == Outcome.SUCCESS


@pytest.mark.django_db
def test_a_worker_killed_before_recording_its_stored_picture_is_paid_once(
    make_project, openai_settings, fake_openai, drain, monkeypatch
):
    openai_settings.STUDIO_PRICES = PRICE
    run = start(make_project(pages=1))
    kill_at(monkeypatch, engine.JobWorker, "_record")
    work_until_killed(run.pk, drain)

    sweep_after_the_lease()
    drain(run.pk)

    job = Illustration.objects.get()
    assert job.status == Status.COMPLETE
    assert fake_openai.call_count == 1
    # Entered once, as the price list's figure (the answer's usage went with the worker).
    assert ledger() == [("price", True, Decimal("0.04"))]
    assert job.attempts_made == 1


@pytest.mark.django_db
def test_a_database_error_while_completing_loses_no_paid_picture(
    make_project, openai_settings, fake_openai, drain, monkeypatch
):
    openai_settings.STUDIO_PRICES = PRICE
    run = start(make_project(pages=1))
    kind = KINDS["illustration"]
    real = kind.complete
    failures = {"left": 1}

    def complete(worker, result):
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("database is locked")
        return real(worker, result)

    monkeypatch.setattr(kind, "complete", complete)
    drain(run.pk)
    services.sweep()
    drain(run.pk)

    job = Illustration.objects.get()
    assert Run.objects.get().state == Run.State.FINISHED
    assert job.status == Status.COMPLETE
    assert fake_openai.call_count == 1
    assert len(ledger()) == 1


# --- a timeout is an unknown outcome -----------------------------------------------------


@pytest.mark.django_db
def test_a_call_that_timed_out_waiting_for_its_answer_counts_against_the_budget(
    make_project, openai_settings, fake_openai, drain
):
    openai_settings.STUDIO_PRICES = PRICE
    openai_settings.STUDIO_PROVIDER_TIMEOUT = 0.5
    fake_openai.script.extend(["hang", "ok"])
    project = make_project(pages=1)
    project.budget = Decimal("0.04")
    project.save()
    run = start(project)
    drain(run.pk)

    run.refresh_from_db()
    first = GenerationAttempt.objects.get()
    assert (first.outcome, first.charge_unconfirmed) == (Outcome.TRANSIENT, True)
    assert ledger() == [("likely", False, Decimal("0.04"))]
    assert (run.state, run.halt_reason) == (Run.State.HALTED, "budget")
    assert fake_openai.call_count == 1


@pytest.mark.django_db
def test_the_retry_of_a_call_that_timed_out_sends_the_same_key(
    make_project, openai_settings, fake_openai, drain
):
    openai_settings.STUDIO_PROVIDER_TIMEOUT = 0.5
    fake_openai.script.extend(["hang", "ok"])
    drain(start(make_project(pages=1)).pk)

    keys = [call["idempotency_key"] for call in fake_openai.calls]
    assert len(keys) == 2 and keys[0] == keys[1]
    assert Illustration.objects.get().status == Status.COMPLETE


# --- one failed heartbeat write ------------------------------------------------------------


class WorkerThread(threading.Thread):
    def __init__(self, run_id: int):
        super().__init__(daemon=True)
        self.run_id, self.error = run_id, None

    def run(self):
        try:
            engine.run_next_job(self.run_id, sleep=lambda seconds: None)
        except Killed:  # as a test meant it: the worker is gone
            self.error = None
        except Exception as error:  # the test asserts there was none
            self.error = error
        finally:
            connection.close()


@pytest.mark.django_db(transaction=True)
def test_one_failed_heartbeat_write_does_not_end_the_renewals(
    make_project, openai_settings, fake_openai, monkeypatch
):
    openai_settings.STUDIO_LEASE_SECONDS = 1.0  # the heartbeat renews it every third
    openai_settings.STUDIO_PROVIDER_TIMEOUT = 10.0
    fake_openai.latency = 2.5  # a call two and a half leases long
    real = engine.JobWorker.renew
    beats = {"count": 0}

    def renew(self):
        beats["count"] += 1
        if beats["count"] == 1:
            raise OperationalError("database is locked")
        return real(self)

    monkeypatch.setattr(engine.JobWorker, "renew", renew)
    worker = WorkerThread(start(make_project(pages=1)).pk)
    worker.start()
    wait_until(lambda: fake_openai.call_count == 1, timeout=10)
    swept = []
    while worker.is_alive():
        swept.append(services.sweep()["requeued"])
        worker.join(timeout=0.2)

    assert worker.error is None
    assert sum(swept) == 0
    assert beats["count"] >= 4  # it went on beating after the failed one
    assert Illustration.objects.get().status == Status.COMPLETE
    assert fake_openai.call_count == 1


# --- a service's job that is still running, paused or followed by a second worker ---------


@pytest.fixture
def replicate_book(make_project, replicate_image_settings, fake_predictions):
    replicate_image_settings.STUDIO_PRICES = {"replicate:black-forest-labs/flux-schnell": "0.003"}
    project = make_project(pages=1)
    project.image_service = "replicate"
    project.save()
    fake_predictions.polls_needed = None  # each prediction runs until the test says
    return project


@pytest.mark.django_db
def test_a_prediction_still_running_at_the_deadline_waits_in_the_queue_and_is_polled_again(
    replicate_book, replicate_image_settings, fake_predictions, drain
):
    replicate_image_settings.STUDIO_PROVIDER_TIMEOUT = 0.3
    run = start(replicate_book)
    drain(run.pk, limit=1)

    job = Illustration.objects.get()
    assert job.status == Status.QUEUED and job.next_attempt_at is not None
    assert job.provider_job_id and job.attempts_made == 0
    account = ProviderAccount.objects.filter(failures_in_row__gt=0)
    assert not account.exists()  # a job still being made is no outage
    assert ledger() == [("likely", False, Decimal("0.003"))]

    fake_predictions.finish.set()
    Illustration.objects.filter(pk=job.pk).update(next_attempt_at=db_now())
    drain(run.pk)

    job.refresh_from_db()
    assert job.status == Status.COMPLETE
    assert fake_predictions.creates == 1
    assert ledger() == [("price", True, Decimal("0.003"))]


@pytest.mark.django_db(transaction=True)
def test_pause_lets_a_prediction_in_flight_finish_and_keeps_its_picture(
    replicate_book, fake_predictions
):
    run = start(replicate_book)
    worker = WorkerThread(run.pk)
    worker.start()
    wait_until(lambda: sum(fake_predictions.polls.values()) >= 1, timeout=10)
    services.pause(project=replicate_book)
    fake_predictions.finish.set()
    worker.join(timeout=15)

    assert worker.error is None
    job = Illustration.objects.get()
    assert job.status == Status.COMPLETE
    assert fake_predictions.creates == 1
    assert Run.objects.get().state == Run.State.PAUSED


@pytest.mark.django_db
def test_a_prediction_followed_by_a_second_worker_is_entered_in_the_ledger_once(
    replicate_book, fake_predictions, drain, monkeypatch
):
    kill_at(monkeypatch, ReplicateImageProvider, "wait")
    run = start(replicate_book)
    work_until_killed(run.pk, drain)  # killed while following its prediction
    sweep_after_the_lease()
    assert ledger() == [("likely", False, Decimal("0.003"))]

    fake_predictions.finish.set()
    drain(run.pk)

    assert Illustration.objects.get().status == Status.COMPLETE
    assert fake_predictions.creates == 1
    assert ledger() == [("price", True, Decimal("0.003"))]


# --- one editor's broken picture is that page's alone ----------------------------------------


def cut_off_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="PNG")
    whole = buffer.getvalue()
    return whole[: len(whole) // 2]  # the header is whole; the pixels are not


@pytest.mark.django_db
def test_a_reference_picture_that_cannot_be_decoded_fails_its_pages_and_not_the_account(
    settings, make_project, openai_settings, fake_openai, drain
):
    project = make_project(pages=settings.STUDIO_OUTAGE_THRESHOLD + 1)
    fox = Character.objects.create(project=project, name="Fox")
    version = ReferenceImage(character=fox, source="upload", width=64, height=64)
    version.image.save("fox.png", ContentFile(cut_off_png()), save=False)
    version.save()
    fox.reference = version
    fox.save()
    fox.pages.set(project.pages.all())
    run = start(project)
    drain(run.pk)

    run.refresh_from_db()
    jobs = Illustration.objects.all()
    assert {job.status for job in jobs} == {Status.FAILED}
    assert all("reference picture" in job.error_message for job in jobs)
    assert fake_openai.call_count == 0
    assert not ProviderAccount.objects.filter(failures_in_row__gt=0).exists()
    assert not ProviderAccount.objects.filter(state="halted").exists()
    assert run.state == Run.State.FINISHED


@pytest.mark.django_db
def test_a_stored_picture_waiting_for_its_job_is_no_orphan(
    make_project, openai_settings, fake_openai, drain, monkeypatch
):
    run = start(make_project(pages=1))
    kill_at(monkeypatch, KINDS["illustration"], "complete")
    work_until_killed(run.pk, drain)
    [attempt] = GenerationAttempt.objects.all()

    orphans = [found.name for found in OrphanSearch(written_before=db_now() + timedelta(days=1))]

    assert attempt.storage_name and attempt.storage_name not in orphans


# --- a claim lost while the call ran -------------------------------------------------------


def late_answer(project, fake_openai, monkeypatch, *, killed_when_completing=False):
    """A worker whose heartbeat cannot write while its call runs: the sweep takes its job
    back (the lease ran out), then the paid answer arrives. With killed_when_completing,
    the worker is killed as it keeps the late picture."""

    def no_renewal(worker):
        raise OperationalError("database is locked")

    monkeypatch.setattr(engine.JobWorker, "renew", no_renewal)
    if killed_when_completing:
        kind = KINDS["illustration"]
        real, calls = kind.complete, {"count": 0}

        def complete(worker, result):
            calls["count"] += 1
            if calls["count"] == 2:  # the first finds the claim lost; the second keeps it
                raise Killed("complete")
            return real(worker, result)

        monkeypatch.setattr(kind, "complete", complete)
    fake_openai.hold()
    worker = WorkerThread(start(project).pk)
    worker.start()
    wait_until(lambda: fake_openai.call_count == 1, timeout=10)
    assert sweep_after_the_lease()["requeued"] == 1
    fake_openai.release()
    worker.join(timeout=15)
    return worker


@pytest.mark.django_db(transaction=True)
def test_a_late_answer_whose_job_was_taken_back_completes_it_and_is_not_paid_again(
    make_project, openai_settings, fake_openai, drain, monkeypatch
):
    project = make_project(pages=1)
    worker = late_answer(project, fake_openai, monkeypatch)

    assert worker.error is None
    assert Illustration.objects.get().status == Status.COMPLETE  # by the late worker itself
    services.stop(project=project)
    assert services.generate_missing(project=project).count == 0  # nothing is missing
    assert fake_openai.call_count == 1
    assert len(ledger()) == 1


@pytest.mark.django_db(transaction=True)
def test_stop_keeps_a_paid_picture_whose_job_waits_in_the_queue(
    make_project, openai_settings, fake_openai, drain, monkeypatch
):
    project = make_project(pages=1)
    late_answer(project, fake_openai, monkeypatch, killed_when_completing=True)
    assert Illustration.objects.get().status == Status.QUEUED  # the picture is in storage

    services.stop(project=project)

    assert services.generate_missing(project=project).count == 0  # nothing is missing
    assert Illustration.objects.get().status == Status.COMPLETE
    assert fake_openai.call_count == 1


@pytest.mark.django_db
def test_an_unknown_outcome_keeps_its_key_through_calls_that_settle_nothing(
    make_project, openai_settings, fake_openai, drain
):
    # The answer breaks off (charged or not, nobody knows); its retry meets "out of
    # credits", which halts; after Resume the call goes out again with the same key.
    fake_openai.script.extend(["cut", "402", "ok"])
    project = make_project(pages=1)
    drain(start(project).pk)
    services.resume(project=project)
    drain(Run.objects.get().pk)

    keys = [call["idempotency_key"] for call in fake_openai.calls]
    assert len(keys) == 3 and len(set(keys)) == 1
    assert Illustration.objects.get().status == Status.COMPLETE
