"""Economy mode: a book's missing pages as one batch job (generation.batches), over real HTTP
against the loopback OpenAI service's Files and Batches APIs.

The steps are driven here in the test's process, as the sweep drives them (advance); the
real clusters, killed at every step, are at "a real cluster" below.
"""

import base64
import io
import json
import os
import re
import signal
from decimal import Decimal

import pytest
import requests
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils.html import escape
from PIL import Image

from generation import batch_jobs, batches, selectors, services
from generation.batches import EconomyRefused
from generation.models import Batch, GenerationAttempt, Illustration, Run, SpendEntry, later
from generation.pricing import money
from generation.providers import openai_batch
from studio.models import Character, ReferenceImage
from tests.conftest import GEMINI_TEST_KEY, TEST_API_KEY, openai_env, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# Half what gpt-image-1 charges live for the usage the fake reports (0.0425: 50 text
# tokens in, 1,056 out at its token prices).
HALF = Decimal("0.0213")


@pytest.fixture
def economy(openai_settings, fake_openai):
    openai_settings.STUDIO_IMAGE_MODEL = "gpt-image-1"
    openai_settings.STUDIO_BATCH_POLL_SECONDS = 0.0
    openai_settings.STUDIO_BATCH_POLL_MAX = 0.0
    fake_openai.batches.batch_seconds = 0.2
    yield fake_openai
    batch_jobs.FAULTS.clear()


def drive(*, until_collected: bool = True, timeout: float = 10) -> None:
    """Advance every batch, as the sweep does, until all of them are collected."""

    def done():
        batch_jobs.advance_due()
        return not Batch.objects.exclude(step=Batch.Step.COLLECTED).exists()

    wait_until(done, timeout=timeout, interval=0.05, message="the batches were not collected")


def pictures(project) -> int:
    return Illustration.objects.filter(page__project=project, status="complete").count()


def test_a_24_page_book_comes_back_from_one_batch_with_a_ledger_at_half_price(
    economy, make_project
):
    project = make_project(pages=24)
    queued = services.generate_missing(project=project, mode="economy")
    assert queued.count == 24
    run = Run.objects.get(project=project)
    assert run.mode == "economy"
    # The journal is written before anything is sent: one batch, one in-flight row a page.
    batch = Batch.objects.get()
    assert (batch.step, batch.total, batch.input_file_id, batch.batch_id) == ("new", 24, "", "")
    assert GenerationAttempt.objects.filter(outcome="in_flight").count() == 24
    assert economy.batches.uploads == 0
    drive()
    assert economy.batches.created == 1
    assert economy.batches.uploads == 1
    assert pictures(project) == 24
    entries = SpendEntry.objects.filter(project_id=project.pk)
    assert entries.count() == 24
    assert {entry.amount for entry in entries} == {HALF}
    run.refresh_from_db()
    assert run.state == "finished"
    batch.refresh_from_db()
    assert (batch.status, batch.completed, batch.total) == ("completed", 24, 24)
    # The live endpoint was never called.
    assert not [call for call in economy.calls if not call.get("batch_api")]


@pytest.mark.parametrize(
    "step", ["before_upload", "after_upload", "before_create", "after_create", "mid_collect"]
)
def test_a_worker_killed_at_any_step_never_creates_a_second_batch(economy, make_project, step):
    project = make_project(pages=6)
    services.generate_missing(project=project, mode="economy")
    batch_jobs.FAULTS.add(step)

    def crashed() -> bool:
        try:
            batch_jobs.advance_due()
        except batch_jobs.Crash:
            return True
        return False

    wait_until(crashed, timeout=10, interval=0.05, message=f"never reached {step}")
    # The killed step's claim on the batch runs out (its lease); the next sweep takes over.
    Batch.objects.update(lease_expires_at=later(-1))
    batch_jobs.FAULTS.clear()
    drive()
    assert economy.batches.created == 1
    assert economy.batches.uploads == (1 if step != "before_upload" else 1)
    assert pictures(project) == 6
    assert SpendEntry.objects.filter(project_id=project.pk).count() == 6
    assert GenerationAttempt.objects.filter(outcome="success").count() == 6


def test_stop_cancels_the_batch_and_keeps_what_the_service_finished(economy, make_project):
    economy.batches.batch_seconds = 2.0
    project = make_project(pages=10)
    services.generate_missing(project=project, mode="economy")
    wait_until(
        lambda: (
            batch_jobs.advance_due() is not None
            and Batch.objects.filter(status="in_progress", completed__gte=3).exists()
        ),
        timeout=10,
        interval=0.05,
    )
    assert services.pause(project=project).run is None  # a batch is not paused
    result = services.stop(project=project)
    assert result.run.state == "stopping"
    drive()
    assert economy.batches.statuses() == ["cancelled"]
    kept = pictures(project)
    assert 3 <= kept < 10
    assert SpendEntry.objects.filter(project_id=project.pk).count() == kept
    assert Illustration.objects.filter(page__project=project, status="canceled").count() == (
        10 - kept
    )
    assert Run.objects.get(project=project).state == "stopped"


def test_an_expired_batch_keeps_its_pictures_and_the_rest_are_missing_again(economy, make_project):
    economy.batches.expire = True
    economy.batches.partial = 0.5
    project = make_project(pages=8)
    services.generate_missing(project=project, mode="economy")
    drive()
    assert pictures(project) == 4
    assert SpendEntry.objects.filter(project_id=project.pk).count() == 4
    returned = Illustration.objects.filter(page__project=project, status="canceled")
    assert returned.count() == 4
    assert "expired" in returned.first().error_message
    batch = Batch.objects.get()
    assert batches.progress_words(batch) == "expired: 4 of 8 came back"
    # Missing again: Generate Missing offers them, now or in another batch.
    economy.batches.expire = False
    assert services.generate_missing(project=project, mode="economy").count == 4
    drive()
    assert pictures(project) == 8
    assert economy.batches.created == 2


def test_failed_lines_fail_their_pages_with_the_service_reason(economy, make_project):
    economy.batches.fail_lines = [("meadow number 3.", "400_policy"), ("meadow number 4.", "500")]
    project = make_project(pages=5)
    services.generate_missing(project=project, mode="economy")
    drive()
    assert pictures(project) == 3
    failed = Illustration.objects.filter(page__project=project, status="failed")
    rejected = failed.get(page__number=3)
    assert rejected.failure_reason == "rejected"
    assert "safety system" in rejected.error_message
    assert failed.get(page__number=4).failure_reason == "exhausted"
    assert SpendEntry.objects.filter(project_id=project.pk).count() == 3
    # Retry failed sends the failed page in another batch; the rejected prompt stays
    # rejected until it is edited.
    economy.batches.fail_lines = []
    assert services.retry_failed(project=project, mode="economy").count == 1
    drive()
    assert pictures(project) == 4
    assert economy.batches.created == 2


def test_a_budget_the_batch_would_pass_is_refused_before_anything_is_sent(economy, make_project):
    project = make_project(pages=24)
    project.budget = Decimal("0.30")  # 24 x 0.021 = 0.504
    project.save()
    with pytest.raises(EconomyRefused) as refused:
        services.generate_missing(project=project, mode="economy")
    assert "$0.50" in str(refused.value) and "$0.30" in str(refused.value)
    assert not Batch.objects.exists() and not Illustration.objects.exists()
    assert economy.call_count == 0


def test_a_model_without_batches_is_refused(economy, make_project, settings):
    settings.STUDIO_IMAGE_MODEL = "dall-e-3"
    project = make_project(pages=2)
    with pytest.raises(EconomyRefused, match="takes no batch jobs"):
        services.generate_missing(project=project, mode="economy")
    assert batches.supports_batch("openai", "gpt-image-1.5")
    assert not batches.supports_batch("openai", "dall-e-3")
    assert not batches.supports_batch("replicate", "gpt-image-1")


def test_resume_generation_mode_economy_and_the_status_json(economy, make_project, capsys):
    project = make_project(pages=3)
    call_command("resume_generation", "--project", str(project.pk), "--mode", "economy")
    assert "sent 3 pictures to a batch (economy: within 24 h)" in capsys.readouterr().out
    call_command("generation_status", "--project", str(project.pk), "--json")
    run = json.loads(capsys.readouterr().out)["projects"][0]["run"]
    assert run["mode"] == "economy"
    assert run["batch"] == {"id": None, "status": "new", "completed": 0, "total": 3}
    drive()
    call_command("generation_status", "--project", str(project.pk), "--json")
    run = json.loads(capsys.readouterr().out)["projects"][0]["run"]
    assert run["batch"]["id"].startswith("batch_")
    assert (run["batch"]["status"], run["batch"]["completed"], run["batch"]["total"]) == (
        "completed",
        3,
        3,
    )


def test_resume_generation_refuses_an_unknown_mode(economy, make_project):
    project = make_project(pages=1)
    with pytest.raises(CommandError, match="invalid choice: 'later'"):
        call_command("resume_generation", "--project", str(project.pk), "--mode", "later")


# --- the web form ----------------------------------------------------------------------------


def test_the_review_page_offers_economy_only_where_the_service_takes_batches(
    economy, make_project, client, editor, settings
):
    client.force_login(editor)
    project = make_project(pages=24)
    html = client.get(reverse("project-detail", args=[project.pk])).content.decode()
    assert 'name="mode" value="economy"' in html
    assert "Economy: within 24 h at half price (≈ $0.50)" in html  # 24 x 0.021
    assert "Now (≈ $1.01)" in html  # 24 x 0.042
    settings.STUDIO_IMAGE_MODEL = "dall-e-3"
    html = client.get(reverse("project-detail", args=[project.pk])).content.decode()
    assert 'name="mode"' not in html
    # Asked for anyway, economy is refused with the reason, and nothing starts.
    refused = client.post(reverse("project-generate", args=[project.pk]), {"mode": "economy"})
    assert refused.status_code == 400
    assert "take no batch jobs" in refused.content.decode()
    assert not Run.objects.exists()


def test_the_form_field_mode_sends_a_batch_and_the_header_shows_its_progress(
    economy, make_project, client, editor
):
    client.force_login(editor)
    project = make_project(pages=4)
    bad = client.post(reverse("project-generate", args=[project.pk]), {"mode": "tomorrow"})
    assert bad.status_code == 400
    assert "mode must be “now” or “economy”" in bad.content.decode()
    sent = client.post(
        reverse("project-generate", args=[project.pk]), {"mode": "economy"}, HTTP_HX_REQUEST="true"
    )
    assert json.loads(sent["HX-Trigger"])["toast"]["message"].startswith(
        "Sent 4 illustrations to a batch"
    )
    html = client.get(reverse("project-detail", args=[project.pk])).content.decode()
    assert "Economy batch: <span" in html and "waiting to be sent" in html
    assert "No Pause for a batch" in html and ">Pause<" not in html
    batch_jobs.advance_due()  # uploaded and created
    html = client.get(reverse("project-detail", args=[project.pk])).content.decode()
    assert html.count(">In a batch<") == 4
    assert "· 4 in a batch" in html and " generating " not in html
    # The chip says "In a batch", the line below it when it was sent.
    lines = re.findall(r">\s*(submitted \d\d:\d\d · usually within a few hours)\s*<", html)
    assert len(lines) == 4, lines
    drive()
    html = client.get(reverse("project-detail", args=[project.pk])).content.decode()
    assert "4 of 4 illustrated" in html


def test_the_header_follows_the_batch_validating_in_progress_finalizing(
    economy, make_project, client, editor
):
    economy.batches.batch_seconds = 1000.0  # its clock is moved on by hand (pass_time)
    client.force_login(editor)
    project = make_project(pages=4)
    services.generate_missing(project=project, mode="economy")
    url = reverse("project-detail", args=[project.pk])

    def header() -> tuple[str, str]:
        batch_jobs.advance_due()  # the sweep's look at the batch
        html = client.get(url).content.decode()
        words = re.search(r'class="state state--batch">([^<]*)<', html)
        return (words.group(1) if words else ""), html

    words, html = header()  # uploaded, created and looked at once
    assert words == "validating"
    assert re.search(r"· submitted \d\d:\d\d · usually within a few hours</span>", html)
    economy.batches.pass_time(500)  # half its time: 2 of its 4 lines are done
    words, html = header()
    assert words == "in progress 2 of 4"
    assert html.count(">In a batch<") == 4  # pictures come when the batch ends
    economy.batches.pass_time(550)
    assert header()[0] == "finalizing"
    economy.batches.pass_time(100)
    words, html = header()
    assert Batch.objects.get().step == "collected"
    assert "4 of 4 illustrated" in html
    assert "usually within a few hours" not in html


def form_of(html: str, action: str) -> str:
    """Return the review page's form that posts to `action`."""
    found = re.search(rf'<form method="post" action="{re.escape(action)}".*?</form>', html, re.S)
    assert found, f"no form for {action}"
    return found.group(0)


def test_regenerate_changed_pages_retry_failed_and_try_variants_send_a_batch_from_their_forms(
    economy, make_project, client, editor
):
    economy.batches.fail_lines = [("meadow number 2.", "500")]
    client.force_login(editor)
    project = make_project(pages=3)
    services.generate_missing(project=project, mode="economy")
    drive()
    assert pictures(project) == 2
    project.pages.filter(number=1).update(prompt="The fox asleep under the oak.")
    economy.batches.fail_lines = []
    html = client.get(reverse("project-detail", args=[project.pk])).content.decode()
    # Each control offers Now or Economy at half price for its one page (0.021).
    for name in ("project-regenerate-outdated", "project-retry-failed"):
        form = form_of(html, reverse(name, args=[project.pk]))
        assert 'name="mode" value="now" checked' in form
        assert "Economy: within 24 h at half price (≈ $0.021)" in form
    page = project.pages.get(number=3)
    variants = client.get(reverse("page-variants", args=[page.pk])).content.decode()
    assert "Economy: within 24 h at half price ($0.021 each)" in variants

    for name, target in (
        ("project-regenerate-outdated", project.pk),
        ("project-retry-failed", project.pk),
        ("page-variants", page.pk),
    ):
        before = economy.batches.created
        answer = client.post(
            reverse(name, args=[target]), {"mode": "economy", "count": "2"}, HTTP_HX_REQUEST="true"
        )
        assert json.loads(answer["HX-Trigger"])["toast"]["level"] == "success", name
        assert Batch.objects.exclude(step="collected").count() == 1, name
        drive()
        assert economy.batches.created == before + 1, name
    # 2 + the changed page + the failed one + 2 variants, every one at the batch price.
    entries = SpendEntry.objects.filter(project_id=project.pk)
    assert entries.count() == 6
    assert {entry.amount for entry in entries} == {HALF}
    assert not [call for call in economy.calls if not call.get("batch_api")]
    assert set(Run.objects.filter(project=project).values_list("mode", flat=True)) == {"economy"}


def test_retry_failed_and_try_variants_show_both_estimates_as_generate_missing_does(
    economy, make_project, client, editor
):
    economy.batches.fail_lines = [("meadow number 1.", "500"), ("meadow number 2.", "500")]
    client.force_login(editor)
    project = make_project(pages=3)
    services.generate_missing(project=project, mode="economy")
    drive()
    assert Illustration.objects.filter(page__project=project, status="failed").count() == 2
    now, half = selectors.picture_price(project), selectors.economy_price(project)
    html = client.get(reverse("project-detail", args=[project.pk])).content.decode()
    # Retry failed queues the 2 failed pages: each choice priced for both.
    form = form_of(html, reverse("project-retry-failed", args=[project.pk]))
    assert f"Now (≈ {money(now * 2)})" in form
    assert f"Economy: within 24 h at half price (≈ {money(half * 2)})" in form
    # Try variants: each count asked for, priced now and in a batch.
    page = project.pages.get(number=3)
    variants = client.get(reverse("page-variants", args=[page.pk])).content.decode()
    for count in (1, 2, 3, 4):
        each = "variant" if count == 1 else "variants"
        assert (
            f"{count} {each} ≈ {money(now * count)} now, ≈ {money(half * count)} in economy"
            in variants
        )
    assert f"Now ({money(now)} each)" in variants
    assert f"Economy: within 24 h at half price ({money(half)} each)" in variants


# --- a real cluster -----------------------------------------------------------------------------


def test_a_real_cluster_sends_collects_and_survives_a_kill_without_a_second_batch(
    economy, make_project, qcluster
):
    economy.batches.batch_seconds = 1.5
    env = openai_env(
        economy,
        STUDIO_IMAGE_MODEL="gpt-image-1",
        STUDIO_WORKERS=1,
        STUDIO_HEARTBEAT_SECONDS=0.3,
        STUDIO_BATCH_POLL_SECONDS=0.2,
        STUDIO_BATCH_POLL_MAX=0.3,
    )
    project = make_project(pages=12)
    services.generate_missing(project=project, mode="economy")
    first = qcluster(**env)
    wait_until(lambda: Batch.objects.filter(step="submitted").exists(), timeout=30)
    os.killpg(first.pid, signal.SIGKILL)  # the whole cluster, while the batch is out
    first.wait()
    qcluster(**env)
    wait_until(lambda: pictures(project) == 12, timeout=30, message="the batch never came back")
    wait_until(lambda: Run.objects.get(project=project).state == "finished", timeout=10)
    assert economy.batches.created == 1
    assert SpendEntry.objects.filter(project_id=project.pk).count() == 12
    assert {entry.amount for entry in SpendEntry.objects.all()} == {HALF}


# The step whose answer the service holds while the cluster is killed, and what the studio's
# journal and the service hold at that moment: (Batch.step, files uploaded, batches created,
# whether the studio stored the file's id, and the batch's).
KILLED_AT = {
    # Before submit: the journal is written and the worker has claimed the batch, but it
    # only asked for the account's files (a read): nothing was sent.
    "list_files": ("new", 0, 0, False, False),
    # The input file is stored at the service; its id never reached the studio.
    "upload": ("new", 1, 0, False, False),
    # The batch is created at the service; its id never reached the studio.
    "create": ("uploaded", 1, 1, True, False),
    # The batch ended and its output file is half downloaded: nothing mapped yet.
    "output": ("submitted", 1, 1, True, True),
}


@pytest.mark.parametrize(
    "step",
    list(KILLED_AT),
    ids=["before-submit", "upload-answer-in-flight", "create-answer-in-flight", "mid-download"],
)
def test_a_real_cluster_killed_at_each_step_never_makes_a_second_batch_nor_loses_a_picture(
    economy, make_project, qcluster, step
):
    desk = economy.batches
    desk.batch_seconds = 0.3
    env = openai_env(
        economy,
        STUDIO_IMAGE_MODEL="gpt-image-1",
        STUDIO_WORKERS=1,
        STUDIO_HEARTBEAT_SECONDS=0.3,  # a lease of 1 s: a killed step's claim runs out fast
        STUDIO_BATCH_POLL_SECONDS=0.2,
        STUDIO_BATCH_POLL_MAX=0.3,
    )
    project = make_project(pages=4)
    services.generate_missing(project=project, mode="economy")
    reached = desk.hold(step)
    first = qcluster(**env)
    try:
        assert reached.wait(timeout=30), f"the cluster never waited on the {step} answer"
        os.killpg(first.pid, signal.SIGKILL)  # the whole cluster, its worker on that answer
        first.wait()
    finally:
        desk.release()  # the held answer goes to a closed socket
    batch = Batch.objects.get()
    stored = bool(batch.input_file_id), bool(batch.batch_id)
    assert (batch.step, desk.uploads, desk.created, *stored) == KILLED_AT[step]
    assert pictures(project) == 0

    qcluster(**env)
    wait_until(lambda: pictures(project) == 4, timeout=30, message="a picture was lost")
    wait_until(lambda: Run.objects.get(project=project).state == "finished", timeout=10)
    # One batch at the service for these pages, the one the studio stored; one input file
    # (a killed upload's file is found again by its name, so none is ever uploaded twice).
    ours = studio_batches(desk)
    batch.refresh_from_db()
    assert (desk.created, len(ours), desk.uploads) == (1, 1, 1)
    assert ours[0]["metadata"][openai_batch.STUDIO_KEY] == batch_jobs.key(batch)
    assert (batch.step, batch.batch_id, batch.completed) == ("collected", ours[0]["id"], 4)
    # The output file is read again after a download cut off (reading a file costs nothing).
    assert desk.downloads == (2 if step == "output" else 1)
    # Each result line mapped back once by its custom_id: one journal row a page, closed
    # once, and one ledger entry for it at the batch price.
    jobs = Illustration.objects.filter(page__project=project)
    attempts = GenerationAttempt.objects.filter(illustration__in=jobs)
    assert sorted(attempts.values_list("idempotency_key", "outcome")) == sorted(
        (batch_jobs.custom_id(job), "success") for job in jobs
    )
    entries = SpendEntry.objects.filter(project_id=project.pk)
    assert sorted(entries.values_list("attempt_id", "amount")) == sorted(
        (pk, HALF) for pk in attempts.values_list("pk", flat=True)
    )


# --- Gemini's batch mode ------------------------------------------------------------------------


@pytest.fixture
def gemini_economy(gemini_settings, fake_gemini):
    gemini_settings.STUDIO_IMAGE_PROVIDER = "gemini"
    gemini_settings.GEMINI_IMAGE_MODEL = "gemini-3.1-flash-image"  # 2.5 is shut down
    gemini_settings.STUDIO_BATCH_POLL_SECONDS = 0.0
    gemini_settings.STUDIO_BATCH_POLL_MAX = 0.0
    fake_gemini.batches.batch_seconds = 0.2
    yield fake_gemini
    batch_jobs.FAULTS.clear()


def test_gemini_batch_mode_draws_a_book_inline_and_a_blocked_prompt_stays_rejected(
    gemini_economy, make_project
):
    gemini_economy.batches.fail_lines = ["meadow number 2."]
    project = make_project(pages=6)
    assert services.generate_missing(project=project, mode="economy").count == 6
    drive()
    assert gemini_economy.batches.created == 1
    assert pictures(project) == 5
    rejected = Illustration.objects.get(page__project=project, status="failed")
    assert rejected.failure_reason == "rejected" and "SAFETY" in rejected.error_message
    entries = SpendEntry.objects.filter(project_id=project.pk)
    assert entries.count() == 5
    assert {entry.amount for entry in entries} == {Decimal("0.0335")}  # 0.067 live
    assert not [call for call in gemini_economy.calls if not call.get("batch_api")]


def test_a_gemini_batch_killed_after_creating_is_found_again_and_expiry_keeps_the_finished(
    gemini_economy, make_project
):
    gemini_economy.batches.expire = True
    project = make_project(pages=4)
    services.generate_missing(project=project, mode="economy")
    batch_jobs.FAULTS.add("after_create")
    with pytest.raises(batch_jobs.Crash):
        batch_jobs.advance_due()
    Batch.objects.update(lease_expires_at=later(-1))  # the killed step's claim ran out
    batch_jobs.FAULTS.clear()
    drive()
    assert gemini_economy.batches.created == 1
    assert pictures(project) == 2
    assert Illustration.objects.filter(page__project=project, status="canceled").count() == 2
    assert Batch.objects.get().status == "expired"


def test_out_of_credits_at_submission_halts_the_account_and_resume_sends_the_same_batch(
    economy, make_project
):
    economy.batches.refuse = "429_quota"
    project = make_project(pages=3)
    services.generate_missing(project=project, mode="economy")
    batch_jobs.advance_due()
    run = Run.objects.get(project=project)
    assert (run.state, run.halt_reason) == ("halted", "out_of_credits")
    assert economy.batches.uploads == 0 and Batch.objects.get().step == "new"
    economy.batches.refuse = ""
    services.resume(project=project)
    drive()
    assert economy.batches.created == 1
    assert pictures(project) == 3
    assert Run.objects.get(project=project).state == "finished"


# --- reference pictures ------------------------------------------------------------------------


def give_reference(project, page_numbers, *, size=(64, 64)) -> None:
    """A character with a noisy picture (it does not compress), named on those pages."""
    pixels = Image.effect_noise(size, 80).convert("RGB")
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG")
    fox = Character.objects.create(project=project, name="Fox", description="A red fox.")
    version = ReferenceImage(character=fox, source="upload", width=size[0], height=size[1])
    version.image.save("fox.png", ContentFile(buffer.getvalue()), save=False)
    version.save()
    fox.reference = version
    fox.save()
    fox.pages.set(project.pages.filter(number__in=page_numbers))


def test_pages_with_references_go_to_an_edits_batch_of_their_own_inline(economy, make_project):
    project = make_project(pages=3)
    give_reference(project, [2])
    services.generate_missing(project=project, mode="economy")
    drive()
    assert pictures(project) == 3
    assert economy.batches.created == 2
    assert sorted(Batch.objects.values_list("endpoint", "total")) == [
        ("/v1/images/edits", 1),
        ("/v1/images/generations", 2),
    ]
    assert SpendEntry.objects.filter(project_id=project.pk).count() == 3


def test_the_header_shows_a_run_split_in_two_batches_together(
    economy, make_project, client, editor, capsys
):
    economy.batches.batch_seconds = 1000.0  # its clock is moved on by hand (pass_time)
    client.force_login(editor)
    project = make_project(pages=5)
    give_reference(project, [2])
    services.generate_missing(project=project, mode="economy")
    url = reverse("project-detail", args=[project.pk])

    def header() -> str:
        html = client.get(url).content.decode()
        return re.search(r'class="batch-progress">(.*?)</p>', html, re.S).group(1)

    batch_jobs.advance_due()  # uploaded, split in two, the first created
    batch_jobs.advance_due()  # the second created
    edits, generations = Batch.objects.order_by("endpoint")
    assert (edits.total, generations.total) == (1, 4)
    assert 'Economy batches (2): <span class="state state--batch">validating</span>' in header()
    economy.batches.pass_time(500)  # half their time: 2 of 4 lines and 0 of 1 are done
    batch_jobs.advance(generations.pk)  # the sweep has looked at one of them only
    assert ">validating · 2 of 5 done<" in header()  # the least advanced, counts summed
    batch_jobs.advance(edits.pk)
    assert ">in progress 2 of 5<" in header()
    # generation_status --json keeps its contract: "batch" is the run's latest batch.
    call_command("generation_status", "--project", str(project.pk), "--json")
    run = json.loads(capsys.readouterr().out)["projects"][0]["run"]
    latest = Batch.objects.order_by("-pk").first()
    assert run["batch"]["id"] == latest.batch_id
    economy.batches.pass_time(600)
    drive()
    assert ">completed<" in header()
    assert pictures(project) == 5


def test_a_page_whose_references_make_its_line_too_large_fails_alone(
    economy, make_project, monkeypatch
):
    monkeypatch.setattr(openai_batch, "MAX_LINE_BYTES", 20_000)
    project = make_project(pages=3)
    give_reference(project, [2], size=(200, 200))
    services.generate_missing(project=project, mode="economy")
    drive()
    assert pictures(project) == 2
    failed = Illustration.objects.get(page__project=project, status="failed")
    assert failed.page.number == 2
    assert failed.failure_reason == "rejected"
    assert "reference pictures weighs" in failed.error_message
    assert "draw it now" in failed.error_message
    assert economy.batches.created == 1
    assert SpendEntry.objects.filter(project_id=project.pk).count() == 2


def sent_pictures(desk) -> dict[int, list[Image.Image]]:
    """The pictures each page's request in the Gemini fake's batches carried inline, by page
    number (the fake decoded them as Gemini does; read here from the parts as sent)."""
    sent = {}
    with desk.lock:
        entries = [entry for entry in desk.batches.values() if "checked" in entry]
    for entry in entries:
        for item, checked in zip(entry["requests"], entry["checked"], strict=True):
            job = batch_jobs._job_id(item["metadata"]["key"])
            pictures_sent = []
            for content in item["request"]["contents"]:
                for part in content["parts"]:
                    if "inlineData" in part:
                        inline = part["inlineData"]
                        assert inline["mimeType"] == "image/png"
                        data = base64.b64decode(inline["data"], validate=True)
                        pictures_sent.append(Image.open(io.BytesIO(data)))
            assert [kind for kind, _ in checked["parts"]].count("image") == len(pictures_sent)
            assert [image["format"] for image in checked["images"]] == ["PNG"] * len(pictures_sent)
            sent[Illustration.objects.get(pk=job).page.number] = pictures_sent
    return sent


def test_gemini_batch_lines_carry_each_page_s_reference_pictures_inline(
    gemini_economy, make_project
):
    project = make_project(pages=4)
    give_reference(project, [2, 4])
    fox = Character.objects.get(project=project).reference
    with Image.open(fox.image.path) as original:
        fox_pixels = original.convert("RGB").tobytes()
    services.generate_missing(project=project, mode="economy")
    drive()
    assert gemini_economy.batches.created == 1
    sent = sent_pictures(gemini_economy.batches)
    assert sorted(sent) == [1, 2, 3, 4]
    assert [len(sent[number]) for number in (1, 2, 3, 4)] == [0, 1, 0, 1]
    for number in (2, 4):
        (picture,) = sent[number]
        assert picture.size == (64, 64)
        assert picture.convert("RGB").tobytes() == fox_pixels
    assert pictures(project) == 4
    entries = SpendEntry.objects.filter(project_id=project.pk)
    assert entries.count() == 4
    assert {entry.amount for entry in entries} == {Decimal("0.0335")}  # 0.067 live
    assert not [call for call in gemini_economy.calls if not call.get("batch_api")]


def test_a_gemini_page_whose_references_pass_the_inline_limit_fails_alone(
    gemini_economy, make_project, monkeypatch
):
    """The limit is what one inline batch takes (Gemini: 20 MB in all, here made smaller):
    a page under it travels, even in a batch of its own; a page over it fails alone."""
    from generation.fakes import gemini_batches as fake_batches
    from generation.providers import gemini_batch

    limit = 400_000
    monkeypatch.setattr(fake_batches, "MAX_INLINE_BYTES", limit)
    monkeypatch.setattr(gemini_batch, "MAX_INLINE_BYTES", limit)
    monkeypatch.setattr(gemini_batch.GeminiBatches, "max_batch_bytes", limit - 64 * 1024)
    project = make_project(pages=4)
    give_reference(project, [2, 4], size=(300, 300))  # ~310 KB a line: two do not fit one
    big = Image.effect_noise((480, 480), 80).convert("RGB")  # ~900 KB: over the limit
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    owl = Character.objects.create(project=project, name="Owl", description="A grey owl.")
    version = ReferenceImage(character=owl, source="upload", width=480, height=480)
    version.image.save("owl.png", ContentFile(buffer.getvalue()), save=False)
    version.save()
    owl.reference = version
    owl.save()
    owl.pages.set(project.pages.filter(number=3))
    services.generate_missing(project=project, mode="economy")
    drive()
    failed = Illustration.objects.get(page__project=project, status="failed")
    assert failed.page.number == 3
    assert failed.failure_reason == "rejected"
    assert "reference pictures weighs" in failed.error_message
    assert "draw it now" in failed.error_message
    assert pictures(project) == 3
    sent = sent_pictures(gemini_economy.batches)
    assert sorted(sent) == [1, 2, 4] and (len(sent[2]), len(sent[4])) == (1, 1)
    assert gemini_economy.batches.created == 2  # pages 1 and 2, then page 4 on its own
    assert sorted(Batch.objects.values_list("total", flat=True)) == [1, 2]
    entries = SpendEntry.objects.filter(project_id=project.pk)
    assert entries.count() == 3
    assert {entry.amount for entry in entries} == {Decimal("0.0335")}


def test_the_gemini_batch_fake_refuses_a_malformed_inline_picture_as_gemini_does(fake_gemini):
    url = f"{fake_gemini.url}/models/gemini-3.1-flash-image:batchGenerateContent"
    key = {"x-goog-api-key": GEMINI_TEST_KEY}

    def batch(inline: dict) -> requests.Response:
        request = {
            "contents": [{"role": "user", "parts": [{"inlineData": inline}, {"text": "A fox."}]}]
        }
        body = {
            "batch": {
                "displayName": "studio-x",
                "inputConfig": {"requests": {"requests": [{"request": request, "metadata": {}}]}},
            }
        }
        return requests.post(url, json=body, headers=key, timeout=5)

    not_a_picture = base64.b64encode(b"these bytes are no picture").decode()
    for inline, message in (
        ({"mimeType": "image/png", "data": "not*base64!!"}, "Base64 decoding failed"),
        ({"mimeType": "image/png", "data": not_a_picture}, "Unable to process input image"),
        ({"mimeType": "image/tiff", "data": not_a_picture}, "Unsupported MIME type"),
    ):
        refused = batch(inline)
        error = refused.json()["error"]
        assert (refused.status_code, error["code"], error["status"]) == (
            400,
            400,
            "INVALID_ARGUMENT",
        )
        assert error["message"].startswith("* batch.input_config.requests.requests[0].request: ")
        assert message in error["message"]
    assert fake_gemini.batches.created == 0


def test_a_project_deleted_while_its_batch_is_out_still_has_every_line_in_the_ledger(
    economy, make_project
):
    economy.batches.batch_seconds = 1.0
    project = make_project(pages=3)
    project_id = project.pk
    services.generate_missing(project=project, mode="economy")
    batch_jobs.advance_due()
    assert Batch.objects.get().step == "submitted"
    project.delete()
    drive()
    drive()  # a second look enters nothing twice
    assert economy.batches.created == 1
    entries = SpendEntry.objects.filter(project_id=project_id)
    assert entries.count() == 3
    assert {entry.amount for entry in entries} == {HALF}


def test_try_variants_in_economy_keeps_them_as_versions_beside_the_current_picture(
    economy, make_project
):
    project = make_project(pages=1)
    services.generate_missing(project=project, mode="economy")
    drive()
    page = project.pages.get()
    assert services.queue_variants(page=page, count=2, mode="economy").count == 2
    drive()
    assert economy.batches.created == 2
    jobs = Illustration.objects.filter(page=page)
    assert sorted(jobs.values_list("variant", "status")) == [
        (0, "complete"),
        (1, "replaced"),
        (2, "replaced"),
    ]
    assert jobs.filter(candidate=True).count() == 2
    assert SpendEntry.objects.filter(project_id=project.pk).count() == 3


def test_stop_cancels_a_gemini_batch_and_keeps_what_it_finished(gemini_economy, make_project):
    gemini_economy.batches.batch_seconds = 2.0
    project = make_project(pages=10)
    services.generate_missing(project=project, mode="economy")
    wait_until(
        lambda: (
            batch_jobs.advance_due() is not None
            and Batch.objects.filter(status="in_progress", completed__gte=3).exists()
        ),
        timeout=10,
        interval=0.05,
    )
    services.stop(project=project)
    drive()
    kept = pictures(project)
    assert 3 <= kept < 10
    assert Batch.objects.get().status == "cancelled"
    assert SpendEntry.objects.filter(project_id=project.pk).count() == kept
    assert Run.objects.get(project=project).state == "stopped"


def test_stop_while_the_account_is_halted_hands_back_a_batch_never_sent(economy, make_project):
    economy.batches.refuse = "401"
    project = make_project(pages=3)
    services.generate_missing(project=project, mode="economy")
    batch_jobs.advance_due()
    assert Run.objects.get(project=project).halt_reason == "auth"
    services.stop(project=project)
    drive()
    assert Run.objects.get(project=project).state == "stopped"
    assert Illustration.objects.filter(page__project=project, status="canceled").count() == 3
    assert economy.batches.created == 0 and economy.batches.uploads == 0
    assert not SpendEntry.objects.exists()


def test_a_batch_the_service_refuses_fails_its_pages_with_the_reason_and_is_not_sent_again(
    economy, make_project
):
    economy.batches.refuse = "400_moderation"
    project = make_project(pages=2)
    services.generate_missing(project=project, mode="economy")
    drive()
    failed = Illustration.objects.filter(page__project=project, status="failed")
    assert failed.count() == 2
    assert failed.first().error_message.startswith("The service refused the batch: ")
    assert Run.objects.get(project=project).state == "finished"
    calls = economy.call_count
    batch_jobs.advance_due()
    assert economy.call_count == calls  # nothing is tried again


def test_lines_over_what_one_batch_takes_go_to_more_batches(gemini_economy, make_project):
    gemini_economy.batches.batch_seconds = 0.1
    from generation.providers.gemini_batch import GeminiBatches

    project = make_project(pages=5)
    services.generate_missing(project=project, mode="economy")
    GeminiBatches.max_batch_lines = 2
    try:
        drive()
    finally:
        GeminiBatches.max_batch_lines = 50_000
    assert gemini_economy.batches.created == 3
    assert sorted(Batch.objects.values_list("total", flat=True)) == [1, 2, 2]
    assert pictures(project) == 5


# --- finding a batch again on a busy account ---------------------------------------------------


def studio_batches(desk) -> list[dict]:
    """The OpenAI fake's batches the studio made (its metadata key names them)."""
    with desk.lock:
        return [b for b in desk.batches.values() if openai_batch.STUDIO_KEY in b["metadata"]]


def batch_lists(fake) -> list[dict]:
    """The calls that listed the account's batches, in order."""
    return [
        call
        for call in fake.calls
        if call.get("method") == "GET" and call["path"] in ("/v1/batches", "/v1beta/batches")
    ]


def kill_after_create() -> None:
    """Work the batch until the worker is killed just after the service created it, before
    its id was stored; the killed step's claim then runs out."""
    batch_jobs.FAULTS.add("after_create")
    with pytest.raises(batch_jobs.Crash):
        batch_jobs.advance_due()
    batch_jobs.FAULTS.clear()
    Batch.objects.update(lease_expires_at=later(-1))


def test_a_batch_created_before_a_kill_is_found_past_a_page_of_later_batches(economy, make_project):
    project = make_project(pages=4)
    services.generate_missing(project=project, mode="economy")
    kill_after_create()
    assert Batch.objects.get().batch_id == ""
    # A busy account: 150 batches made after ours, more than the 100 a page lists.
    others = economy.batches.others(150)
    listed = len(batch_lists(economy))
    drive()
    ours = studio_batches(economy.batches)
    assert len(ours) == 1  # found again, never created twice
    assert Batch.objects.get().batch_id == ours[0]["id"]
    assert pictures(project) == 4
    assert SpendEntry.objects.filter(project_id=project.pk).count() == 4
    # The search read the first page, then the next one after its last batch.
    pages = [call["query"] for call in batch_lists(economy)[listed:]]
    assert pages == [{"limit": ["100"]}, {"limit": ["100"], "after": [others[-100]]}]


def test_the_search_reads_no_further_back_than_the_batch_was_written(economy, make_project):
    economy.batches.others(250, age=3 * 3600)  # made hours before this book's batch
    project = make_project(pages=2)
    services.generate_missing(project=project, mode="economy")
    drive()
    assert len(studio_batches(economy.batches)) == 1
    assert pictures(project) == 2
    # Newest first: the first page already reaches batches older than this one.
    assert len(batch_lists(economy)) == 1


def test_a_search_that_cannot_reach_back_far_enough_creates_nothing_and_tries_again(
    economy, make_project, monkeypatch, client, editor, admin_client
):
    client.force_login(editor)
    project = make_project(pages=3)
    services.generate_missing(project=project, mode="economy")
    kill_after_create()
    economy.batches.others(150)
    monkeypatch.setattr(openai_batch, "SEARCH_PAGES", 1)  # ours is on the second page
    batch_jobs.advance_due()
    batch = Batch.objects.get()
    assert (batch.step, batch.batch_id) == ("uploaded", "")
    assert "cannot tell whether the batch was already created" in batch.message
    assert len(studio_batches(economy.batches)) == 1
    # The editor reads why it waits, under the header's batch words; the admin's list too.
    html = client.get(reverse("project-detail", args=[project.pk])).content.decode()
    assert ">waiting to be sent<" in html
    waiting = re.findall(r'<p class="batch-waiting muted" role="status">([^<]*)</p>', html)
    assert waiting == [f"Waiting to be sent: {escape(batch.message)}"]
    listed = admin_client.get(reverse("admin:generation_batch_changelist")).content.decode()
    assert "cannot tell whether the batch was already created" in listed
    assert Illustration.objects.filter(page__project=project, status="failed").count() == 0
    monkeypatch.setattr(openai_batch, "SEARCH_PAGES", 2)
    drive()
    assert len(studio_batches(economy.batches)) == 1
    assert pictures(project) == 3
    assert Batch.objects.get().message == ""
    html = client.get(reverse("project-detail", args=[project.pk])).content.decode()
    assert "batch-waiting" not in html


@pytest.mark.parametrize("newest_first", [True, False], ids=["newest-first", "oldest-first"])
def test_a_gemini_batch_is_found_again_among_pages_of_others_in_either_order(
    gemini_economy, make_project, newest_first
):
    desk = gemini_economy.batches
    desk.newest_first = newest_first
    desk.others(120, age=3 * 3600)  # older than this book's batch
    project = make_project(pages=4)
    services.generate_missing(project=project, mode="economy")
    kill_after_create()
    desk.others(150)  # and later ones
    drive()
    ours = [
        name for name, entry in desk.batches.items() if entry["displayName"].startswith("studio-")
    ]
    assert len(ours) == 1 and desk.created == 1
    assert Batch.objects.get().batch_id == ours[0]
    assert pictures(project) == 4
    assert all(call["query"]["pageSize"] == ["100"] for call in batch_lists(gemini_economy))


def test_the_fakes_list_batches_a_page_at_a_time_and_refuse_what_the_services_refuse(
    fake_openai, fake_gemini
):

    headers = {"Authorization": f"Bearer {TEST_API_KEY}"}
    made = fake_openai.batches.others(45)
    url = f"{fake_openai.url}/batches"
    first = requests.get(url, headers=headers, timeout=5).json()
    assert len(first["data"]) == 20 and first["has_more"]  # 20 unless asked
    assert [item["id"] for item in first["data"]] == made[::-1][:20]  # newest first
    assert first["last_id"] == made[-20]
    rest = requests.get(
        url, params={"limit": 100, "after": first["last_id"]}, headers=headers, timeout=5
    ).json()
    assert len(rest["data"]) == 25 and not rest["has_more"]
    for limit, code in ((0, "integer_below_min_value"), (101, "integer_above_max_value")):
        refused = requests.get(url, params={"limit": limit}, headers=headers, timeout=5)
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, code)
    assert (
        requests.get(url, params={"after": "batch_x"}, headers=headers, timeout=5).status_code
        == 400
    )

    names = fake_gemini.batches.others(7)
    url = f"{fake_gemini.url}/batches"
    key = {"x-goog-api-key": GEMINI_TEST_KEY}
    assert requests.get(url, headers=key, timeout=5).json() == {}  # no pageSize: nothing
    page = requests.get(url, params={"pageSize": 5}, headers=key, timeout=5).json()
    assert [op["name"] for op in page["operations"]] == names[::-1][:5]
    last = requests.get(
        url, params={"pageSize": 5, "pageToken": page["nextPageToken"]}, headers=key, timeout=5
    ).json()
    assert [op["name"] for op in last["operations"]] == names[::-1][5:]
    assert "nextPageToken" not in last
    for params in ({"pageSize": -1}, {"pageSize": 5, "pageToken": "made-up"}):
        refused = requests.get(url, params=params, headers=key, timeout=5)
        assert (refused.status_code, refused.json()["error"]["status"]) == (
            400,
            "INVALID_ARGUMENT",
        )


def test_a_check_that_reads_the_batch_again_clears_the_reason_an_earlier_one_left(
    economy, make_project
):
    # Why a step waited is over once a later step goes through: upload and create clear
    # it, and so does a check that reads the batch after one that failed.
    economy.batches.batch_seconds = 1000.0  # still in progress at every look
    project = make_project(pages=2)
    services.generate_missing(project=project, mode="economy")
    wait_until(
        lambda: (
            batch_jobs.advance_due() is not None
            and Batch.objects.get().step == Batch.Step.SUBMITTED
        ),
        timeout=10,
        interval=0.05,
    )
    failed_look = "The image service did not answer in time (a check of the batch)."
    checks = Batch.objects.get().checks
    Batch.objects.update(message=failed_look, next_check_at=later(0))

    wait_until(  # the next look, whenever the batch is due and free
        lambda: batch_jobs.advance_due() is not None and Batch.objects.get().checks > checks,
        timeout=10,
        interval=0.05,
    )

    batch = Batch.objects.get()
    assert (batch.step, batch.message) == ("submitted", "")
    assert batch.status in ("validating", "in_progress")  # read again, still out
