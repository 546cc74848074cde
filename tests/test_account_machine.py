"""The provider account as one state machine (generation.machines.ACCOUNT), and the
account-side failures of issue 29: every halt, probe and resume of an account goes
through its table, so a guard needed on one path holds on every path. Each test here
failed before its fix."""

import errno
import io
import json
import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core import mail
from django.core.files.storage import FileSystemStorage
from django.core.management import call_command
from django.db import connection
from PIL import Image

from generation import engine, notify, runs, services
from generation.clock import db_now
from generation.models import GenerationAttempt, Illustration, ProviderAccount, Run
from generation.providers import account_of, get_provider
from studio import characters
from studio.characters import check_reference_image
from studio.models import Project
from tests.conftest import wait_until
from tests.test_fair_workers import POSTGRESQL_ONLY, race_a_project_lock

Status = Illustration.Status


def start(project):
    return services.generate_missing(project=project).run


def probe_due() -> None:
    ProviderAccount.objects.update(next_probe_at=db_now() - timedelta(seconds=1))


class WorkerThread(threading.Thread):
    """A worker in a thread of this process, keeping whatever it raised."""

    def __init__(self, run_id: int):
        super().__init__(daemon=True)
        self.run_id, self.error, self.job = run_id, None, None

    def run(self):
        try:
            self.job = engine.run_next_job(self.run_id, sleep=lambda seconds: None)
        except Exception as error:  # the test asserts there was none
            self.error = error
        finally:
            connection.close()


@pytest.fixture
def outage(settings, make_project, openai_settings, fake_openai, drain):
    """Three books on one key, halted by an outage (two 503s in a row)."""
    settings.STUDIO_OUTAGE_THRESHOLD = 2
    books = [make_project(pages=2, title=f"Book {n}") for n in "ABC"]
    runs = [start(book) for book in books]
    fake_openai.default = "503"
    drain(runs[0].pk)
    assert set(Run.objects.values_list("state", "halt_reason")) == {("halted", "outage")}
    fake_openai.default = "ok"
    return books, runs


# --- 6 and 14: one lock order, no deadlock -------------------------------------------------


@POSTGRESQL_ONLY
@pytest.mark.django_db(transaction=True)
def test_an_editors_resume_meeting_a_successful_probe_never_deadlocks_nor_loses_the_picture(
    make_project, openai_settings, fake_openai
):
    editors = make_project(pages=1, title="Resumed by its editor")  # the lower id
    probed = make_project(pages=1, title="Carries the probe")
    key = account_of(get_provider())
    halted, probing = start(editors), start(probed)
    message = "The image service failed 5 times in a row; it looks like an outage."
    Run.objects.filter(pk=halted.pk).update(
        state="halted", halt_reason="outage", message=message, halted_account=key
    )
    ProviderAccount.objects.create(
        key=key, provider="openai", state="probing", reason="outage", message=message
    )

    fake_openai.hold()  # the probe's call is out; its picture comes back during the race
    worker = WorkerThread(probing.pk)
    worker.start()
    wait_until(lambda: fake_openai.in_flight == 1, timeout=10)

    def probe_succeeds():
        fake_openai.release()
        worker.join(15)
        return worker.error or worker.job

    results = race_a_project_lock(
        editors, then=lambda: services.resume(project=editors).resumed, meanwhile=probe_succeeds
    )

    job = Illustration.objects.get(page__project=probed)
    assert results == {"then": True, "meanwhile": job.pk}  # no deadlock on either side
    assert job.status == Status.COMPLETE
    assert ProviderAccount.objects.get().state == "ok"
    assert Run.objects.get(pk=halted.pk).state == "running"


@POSTGRESQL_ONLY
@pytest.mark.django_db(transaction=True)
def test_two_resumes_of_projects_halted_by_one_account_never_deadlock(
    make_project, openai_settings
):
    first, second = make_project(pages=1, title="First"), make_project(pages=1, title="Second")
    key = account_of(get_provider())
    runs = [start(first), start(second)]
    Run.objects.update(
        state="halted", halt_reason="out_of_credits", message="Add credits.", halted_account=key
    )
    ProviderAccount.objects.create(
        key=key, provider="openai", state="halted", reason="out_of_credits", message="Add credits."
    )
    versions = dict(Project.objects.values_list("pk", "version"))

    results = race_a_project_lock(
        first,
        then=lambda: services.resume(project=first).resumed,
        meanwhile=lambda: services.resume(project=second).resumed,
    )

    # No deadlock: the second Resume waits for the first, which continued both runs.
    assert results == {"then": True, "meanwhile": False}
    assert ProviderAccount.objects.get().state == "ok"
    assert {Run.objects.get(pk=run.pk).state for run in runs} == {"running"}
    # Every project showing the account moved its change counter.
    assert all(p.version > versions[p.pk] for p in Project.objects.all())


# --- 7. probes take turns among the runs the outage halted ---------------------------------


@pytest.mark.django_db
def test_an_outage_is_probed_through_runs_with_work_left_and_each_in_turn(
    outage, fake_openai, drain
):
    books, runs = outage
    books[0].pages.all().delete()  # the oldest halted run has no jobs left
    fake_openai.default = "503"

    probe_due()
    assert services.sweep()["probes"] == 1
    [first] = Run.objects.filter(state="running")
    assert first.pk != runs[0].pk
    drain(first.pk)  # the service is still down
    assert not Run.objects.filter(state="running").exists()

    probe_due()
    assert services.sweep()["probes"] == 1
    [second] = Run.objects.filter(state="running")
    assert second.pk not in (runs[0].pk, first.pk)  # the other run's turn


# --- 8. a rejected page proves the service is up ---------------------------------------------


@pytest.mark.django_db
def test_a_probe_that_lands_on_a_rejected_page_heals_the_account_and_fails_that_page(
    outage, fake_openai, drain
):
    books, runs = outage
    probe_due()
    assert services.sweep()["probes"] == 1
    [probed] = Run.objects.filter(state="running")
    fake_openai.script.append("400_policy")
    calls = fake_openai.call_count
    for run in runs:
        drain(run.pk)

    assert ProviderAccount.objects.get().state == "ok"
    assert Illustration.objects.filter(failure_reason="rejected").count() == 1
    assert Illustration.objects.filter(status=Status.COMPLETE).count() == 5
    assert fake_openai.call_count == calls + 6  # the refused probe, then each page once
    assert set(Run.objects.values_list("state", flat=True)) == {"finished"}


# --- 9. an outage never overwrites a halt that needs a person ------------------------------


@pytest.mark.django_db
def test_a_503_from_a_call_in_flight_never_turns_out_of_credits_into_an_outage(
    make_project, openai_settings, fake_openai, drain
):
    run = start(make_project(pages=3))
    started = db_now()  # a call goes out, then another finds the account out of credits
    fake_openai.script.append("402")
    drain(run.pk, limit=1)
    key = account_of(get_provider())

    runs.halt_account(
        key,
        reason="outage",
        message="The image service failed 5 times in a row (HTTP 503).",
        provider=get_provider(),
        call_started=started,
    )

    account = ProviderAccount.objects.get()
    assert (account.state, account.reason, account.next_probe_at) == (
        "halted",
        "out_of_credits",
        None,
    )
    run.refresh_from_db()
    assert (run.state, run.halt_reason) == ("halted", "out_of_credits")
    assert services.sweep()["probes"] == 0


# --- 10. any success resets the breaker ---------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_success_admitted_while_the_count_was_zero_still_resets_the_breaker(
    settings, make_project, openai_settings, fake_openai, drain
):
    settings.STUDIO_OUTAGE_THRESHOLD = 5
    settings.STUDIO_MAX_ATTEMPTS = 1
    run = start(make_project(pages=2))
    fake_openai.hold()  # the first call's picture waits
    worker = WorkerThread(run.pk)
    worker.start()
    wait_until(lambda: fake_openai.in_flight == 1, timeout=10)
    fake_openai.script.append("500")
    drain(run.pk, limit=1)  # another page's call fails meanwhile
    assert ProviderAccount.objects.get().failures_in_row == 1

    fake_openai.release()  # then the first call succeeds
    worker.join(15)
    assert worker.error is None
    assert ProviderAccount.objects.get().failures_in_row == 0


# --- 11. a probe's failure after the editor's Resume halts nothing --------------------------


@pytest.mark.django_db(transaction=True)
def test_a_probe_that_fails_after_an_editors_resume_leaves_the_account_going(
    outage, openai_settings, fake_openai, drain
):
    books, runs = outage
    openai_settings.STUDIO_PROVIDER_TIMEOUT = 0.5
    probe_due()
    assert services.sweep()["probes"] == 1
    [probed] = Run.objects.filter(state="running")
    fake_openai.script.append("hang")  # the probe's call never answers in time
    worker = WorkerThread(probed.pk)
    worker.start()
    wait_until(lambda: fake_openai.in_flight == 1, timeout=10)
    other = next(book for book, run in zip(books, runs, strict=True) if run.pk != probed.pk)
    assert services.resume(project=other).resumed  # the editor: the service is back
    worker.join(15)

    assert worker.error is None
    account = ProviderAccount.objects.get()
    assert (account.state, account.reason) == ("ok", "")
    assert not Run.objects.filter(state="halted").exists()


# --- 13. the probe's run ends without the outage's word -------------------------------------


@pytest.mark.django_db
def test_the_run_that_carried_a_successful_probe_finishes_without_a_halt_reason(
    outage, editor, fake_openai, drain
):
    books, runs = outage
    editor.email = "editor@example.com"
    editor.save()
    probe_due()
    assert services.sweep()["probes"] == 1
    [probed] = Run.objects.filter(state="running")
    mail.outbox.clear()
    for run in runs:
        drain(run.pk)

    assert set(Run.objects.values_list("state", "halt_reason", "message")) == {("finished", "", "")}
    out = StringIO()
    call_command("generation_status", "--json", stdout=out)
    projects = json.loads(out.getvalue())["projects"]
    reported = {p["run"]["state"]: p["run"]["halt_reason"] for p in projects}
    assert reported == {"finished": None}
    assert notify.run_report(probed.pk)["halt_reason"] is None
    assert len(mail.outbox) == 3
    assert not any("Why it halted" in message.body for message in mail.outbox)


# --- 16. a full disk halts the studio, one Resume continues it ------------------------------


class FullDisk(FileSystemStorage):
    def _save(self, name, content):
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.django_db
def test_a_full_disk_halts_every_running_project_and_one_resume_continues_them_all(
    settings, make_project, openai_settings, fake_openai, drain
):
    storages = settings.STORAGES
    settings.STORAGES = {**storages, "default": {"BACKEND": "tests.test_account_machine.FullDisk"}}
    first, second = make_project(pages=2, title="First"), make_project(pages=2, title="Second")
    runs = [start(first), start(second)]
    drain(runs[0].pk)
    drain(runs[1].pk)

    assert fake_openai.call_count == 1  # the second project paid for nothing it cannot keep
    assert set(Run.objects.values_list("state", "halt_reason")) == {("halted", "storage")}
    later = start(make_project(pages=1, title="Queued after"))  # joins the halt at once
    later.refresh_from_db()
    assert (later.state, later.halt_reason) == ("halted", "storage")
    assert ProviderAccount.objects.filter(state="halted").count() == 0  # not the service's

    settings.STORAGES = storages  # space freed
    services.resume(project=second)  # one Resume
    assert set(Run.objects.values_list("state", flat=True)) == {"running"}
    for run in (*runs, later):
        drain(run.pk)
    assert Illustration.objects.filter(status=Status.COMPLETE).count() == 5
    assert fake_openai.call_count == 1 + 5


# --- 17. a wrong model halts the work that uses it -------------------------------------------


@pytest.mark.django_db
def test_a_wrong_clip_model_halts_only_the_projects_making_clips(
    settings, make_project, replicate_settings, replicate_image_settings, fake_predictions, drain
):
    settings.STUDIO_CLIP_MODEL = "minimax/video-02"
    clipped = make_project(pages=1, title="Clips")
    drain(start(clipped).pk)  # the offline renderer draws its picture
    pictured = make_project(pages=2, title="Pictures on Replicate")
    Project.objects.filter(pk=pictured.pk).update(image_service="replicate")
    pictured.refresh_from_db()
    pictures = start(pictured)

    clips = services.generate_missing_clips(project=clipped).run
    drain(clips.pk, kind="clip")
    clips.refresh_from_db()
    assert (clips.state, clips.halt_reason) == ("halted", "config")
    assert "Fix STUDIO_CLIP_MODEL" in clips.message
    pictures.refresh_from_db()
    assert pictures.state == "running"
    assert ProviderAccount.objects.filter(state="halted").count() == 0

    drain(pictures.pk)
    assert Illustration.objects.filter(page__project=pictured, status=Status.COMPLETE).count() == 2
    settings.STUDIO_CLIP_MODEL = "minimax/video-01"
    services.resume(project=clipped)
    drain(clips.pk, kind="clip")
    clips.refresh_from_db()
    assert clips.state == "finished"


# --- also: a call that never went out never reaches the account -----------------------------


@pytest.mark.django_db
def test_a_reference_picture_that_cannot_be_decoded_fails_its_page_and_never_the_account(
    settings, make_project, openai_settings, fake_openai, drain
):
    settings.STUDIO_OUTAGE_THRESHOLD = 2
    project = make_project(pages=3)
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 50, 50)).save(buffer, format="PNG")
    peter = characters.create_character(project=project, name="Peter")
    version = characters.add_reference(
        character=peter, image=check_reference_image(buffer.getvalue())
    )
    with version.image.open("wb") as stored:
        stored.write(b"this is no picture")  # broken on disk since
    characters.set_page_characters(page=project.pages.get(number=2), characters=[peter])

    drain(start(project).pk)

    account = ProviderAccount.objects.filter(key=account_of(get_provider())).first()
    assert account is None or (account.state, account.failures_in_row) == ("ok", 0)
    broken = Illustration.objects.get(page__number=2)
    assert broken.status == Status.FAILED
    assert "reference picture" in broken.error_message
    assert Illustration.objects.filter(status=Status.COMPLETE).count() == 2
    assert fake_openai.call_count == 2
    assert not GenerationAttempt.objects.filter(outcome="success", illustration=broken).exists()
