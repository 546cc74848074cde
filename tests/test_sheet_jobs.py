"""Character sheets are jobs of their own kind on the one engine, and every page sends its
characters' chosen pictures: the same guarantees as pages (one claim, retries, halts,
attempt rows, no duplicate paid call), and honest records of what was sent.

Sheets go to the fake OpenAI-compatible service over real HTTP. What a page hands its
provider is read by a provider that records its requests (the provider-side wire
formats are tested with each service's fake).
"""

import io
from datetime import timedelta

import pytest
from PIL import Image

from generation import providers, services
from generation.clock import db_now
from generation.fakes.openai import png_bytes
from generation.models import GenerationAttempt, Illustration, Run, SheetJob
from generation.providers.base import GeneratedImage, ImageRequest
from studio import characters
from studio.characters import check_reference_image
from studio.models import Character
from studio.review import page_cards
from tests.conftest import openai_env, wait_until

pytestmark = pytest.mark.django_db

Status = SheetJob.Status
Outcome = GenerationAttempt.Outcome


@pytest.fixture
def peter(make_project):
    project = make_project(pages=3, style_guide="Soft watercolour.")
    return characters.create_character(
        project=project, name="Peter", description="A small brown rabbit in a blue jacket."
    )


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def draw(character):
    return services.draw_sheet(character=character)


# --- sheets on the engine ------------------------------------------------------------


def test_a_sheet_is_drawn_once_on_the_engine_and_becomes_the_chosen_picture(
    peter, openai_settings, fake_openai, drain
):
    queued = draw(peter)
    assert queued.count == 1
    assert draw(peter).count == 0  # already on its way: not queued twice

    assert drain(queued.run.pk, kind="sheet") == 1
    job = SheetJob.objects.get()
    peter.refresh_from_db()
    assert job.status == Status.COMPLETE
    assert peter.reference == job.reference
    assert (peter.reference.source, peter.reference.width) == ("drawn", 64)
    assert [(a.number, a.outcome) for a in job.attempts.all()] == [(1, Outcome.SUCCESS)]
    prompt = fake_openai.calls[0]["prompt"]
    assert "front view, a three-quarter view and the back view" in prompt
    assert "A small brown rabbit in a blue jacket." in prompt
    assert prompt.endswith("Style guide: Soft watercolour.")
    assert job.prompt_sent == prompt
    queued.run.refresh_from_db()
    assert queued.run.state == Run.State.FINISHED


def test_a_redraw_keeps_the_earlier_version_chosen_until_the_editor_picks(
    peter, openai_settings, fake_openai, drain
):
    drain(draw(peter).run.pk, kind="sheet")
    first = Character.objects.get().reference
    drain(draw(peter).run.pk, kind="sheet")

    peter.refresh_from_db()
    assert peter.versions.count() == 2
    assert peter.reference == first
    second = peter.versions.exclude(pk=first.pk).get()
    assert characters.choose_reference(character=peter, version=second) is True
    assert Character.objects.get().reference == second


def test_a_sheet_retries_503_and_records_every_attempt(peter, openai_settings, fake_openai, drain):
    fake_openai.script.extend(["503", "503"])
    waits = []
    drain(draw(peter).run.pk, kind="sheet", waits=waits)

    job = SheetJob.objects.get()
    assert job.status == Status.COMPLETE
    outcomes = [(a.number, a.outcome, a.http_status) for a in job.attempts.all()]
    assert outcomes == [(1, "transient", 503), (2, "transient", 503), (3, "success", 200)]
    assert len(waits) == 2
    assert fake_openai.call_count == 3


def test_no_credits_halts_the_sheets_run_and_resume_draws_it_once(
    peter, openai_settings, fake_openai, drain
):
    fake_openai.default = "402"
    run = draw(peter).run
    drain(run.pk, kind="sheet")
    run.refresh_from_db()
    assert (run.state, run.halt_reason) == ("halted", "out_of_credits")
    job = SheetJob.objects.get()
    assert (job.status, job.attempts_made) == (Status.QUEUED, 0)
    assert fake_openai.call_count == 1

    fake_openai.default = "ok"
    services.resume(project=peter.project)
    assert drain(run.pk, kind="sheet") == 1
    assert fake_openai.call_count == 2
    assert SheetJob.objects.get().status == Status.COMPLETE


def test_the_sheets_halt_stops_the_pages_of_every_project_on_the_account(
    peter, make_project, openai_settings, fake_openai, drain
):
    other = make_project(pages=2, title="Another")
    pages_run = services.generate_missing(project=other).run
    fake_openai.default = "402"
    drain(draw(peter).run.pk, kind="sheet")
    drain(pages_run.pk)

    pages_run.refresh_from_db()
    assert (pages_run.state, pages_run.halt_reason) == ("halted", "out_of_credits")
    assert fake_openai.call_count == 1


def test_a_lost_sheet_call_is_resent_with_its_key_never_paid_for_anew(
    peter, openai_settings, fake_openai, drain
):
    run = draw(peter).run
    job = SheetJob.objects.get()
    SheetJob.objects.filter(pk=job.pk).update(
        status=Status.GENERATING, claimed_by="dead", lease_expires_at=db_now() - timedelta(1)
    )
    GenerationAttempt.objects.create(
        sheet=job, number=1, started_at=db_now(), idempotency_key="studio-lost-sheet"
    )
    assert services.sweep()["requeued"] == 1
    drain(run.pk, kind="sheet")

    assert [call["idempotency_key"] for call in fake_openai.calls] == ["studio-lost-sheet"]
    job.refresh_from_db()
    assert [a.outcome for a in job.attempts.all()] == [Outcome.LOST, Outcome.SUCCESS]
    assert job.status == Status.COMPLETE


def test_stop_cancels_a_queued_sheet_and_calls_nothing(peter, openai_settings, fake_openai, drain):
    run = draw(peter).run
    services.stop(project=peter.project)
    assert drain(run.pk, kind="sheet") == 0
    assert SheetJob.objects.get().status == Status.CANCELED
    assert fake_openai.call_count == 0


def test_a_sheet_whose_worker_lost_its_claim_keeps_no_version(
    peter, openai_settings, fake_openai, drain, media
):
    fake_openai.script.append("ok")
    run = draw(peter).run
    from generation import engine

    worker = engine.JobWorker(engine.KINDS["sheet"], sleep=lambda s: None)
    job = worker.claim_next(run.pk)
    # Someone else took the job meanwhile (its lease was reclaimed).
    SheetJob.objects.filter(pk=job.pk).update(claimed_by="another")
    worker.work(job)

    assert peter.versions.count() == 0
    assert not list((media / "references").rglob("*.png"))


# --- references sent with pages --------------------------------------------------------


class RecordingProvider:
    """An offline provider that keeps every request it is handed."""

    name = "recording"
    model = "recording-1"
    max_references = 2
    requests: list[ImageRequest] = []

    def generate(self, request: ImageRequest) -> GeneratedImage:
        RecordingProvider.requests.append(request)
        return GeneratedImage(content=png_bytes((32, 32)), width=32, height=32)


@pytest.fixture
def recording(settings, monkeypatch):
    monkeypatch.setitem(providers.PROVIDERS, "recording", f"{__name__}.RecordingProvider")
    settings.STUDIO_IMAGE_PROVIDER = "recording"
    RecordingProvider.requests = []
    return RecordingProvider


def picture(colour) -> characters.CheckedImage:
    return check_reference_image(png_bytes((40, 40), colour))


@pytest.fixture
def cast(make_project, media):
    project = make_project(pages=0)
    from studio.services import add_page

    add_page(project=project, text="Peter and Benjamin run past Mr. McGregor.")
    add_page(project=project, text="The garden is quiet.")
    style = characters.create_character(
        project=project, name="Look", kind="style", image=picture((10, 10, 200))
    )
    made = {
        name: characters.create_character(
            project=project, name=name, description=f"{name} as always.", image=picture(rgb)
        )
        for name, rgb in (
            ("Peter", (200, 0, 0)),
            ("Benjamin", (0, 200, 0)),
            ("Mr. McGregor", (90, 90, 90)),
        )
    }
    return project, style, made


def test_each_page_sends_the_style_reference_first_then_its_own_characters_up_to_the_limit(
    cast, recording, drain, settings
):
    project, style, made = cast
    settings.STUDIO_MAX_REFERENCES = 4  # the provider takes 2: the smaller wins
    page = project.pages.get(number=1)
    characters.set_page_characters(page=page, characters=[made["Benjamin"]])
    drain(services.generate_missing(project=project).run.pk)

    first, second = sorted(recording.requests, key=lambda r: r.caption)
    assert [(r.name, r.kind) for r in first.references] == [
        ("Look", "style"),
        ("Benjamin", "character"),
    ]
    assert first.references[1].description == "Benjamin as always."
    with Image.open(io.BytesIO(first.references[0].content)) as sent:
        assert sent.getpixel((0, 0))[:3] == (10, 10, 200)
    assert [r.name for r in second.references] == ["Look"]
    assert {r.subject for r in recording.requests} == {"page"}

    page_one = Illustration.objects.get(page__number=1)
    assert [(e["name"], e["reference"]) for e in page_one.references_sent] == [
        ("Look", style.reference_id),
        ("Benjamin", made["Benjamin"].reference_id),
    ]


def test_over_the_limit_the_pages_own_characters_are_kept_before_the_style_reference(
    cast, recording, drain
):
    project, _, _ = cast  # page 1 names three characters; the provider takes 2
    drain(services.generate_missing(project=project).run.pk)
    first, second = sorted(recording.requests, key=lambda r: r.caption)
    assert [r.name for r in first.references] == ["Benjamin", "Mr. McGregor"]
    assert [r.name for r in second.references] == ["Look"]  # room for the style reference


def test_settings_limit_what_is_sent_and_a_provider_taking_none_gets_none(
    cast, recording, drain, settings
):
    project, _, _ = cast
    settings.STUDIO_MAX_REFERENCES = 1
    drain(services.generate_missing(project=project).run.pk)
    sent = sorted((req.caption, [r.name for r in req.references]) for req in recording.requests)
    assert [names for _, names in sent] == [["Benjamin"], ["Look"]]

    RecordingProvider.max_references = 0
    try:
        page = project.pages.get(number=1)
        drain(services.queue_page(page=page, regenerate=True).run.pk)
    finally:
        RecordingProvider.max_references = 2
    assert recording.requests[-1].references == ()
    assert Illustration.objects.get(page=page, status="complete").references_sent == []


def test_a_new_chosen_picture_or_description_marks_its_pages_reference_changed_only(
    cast, recording, drain
):
    project, _, made = cast
    drain(services.generate_missing(project=project).run.pk)
    states = {card.page.number: card.state for card in page_cards(project)}
    assert states == {1: "complete", 2: "complete"}

    characters.add_reference(character=made["Benjamin"], image=picture((1, 2, 3)))
    cards = {card.page.number: card for card in page_cards(project)}
    assert (cards[1].state, cards[1].outdated_reason) == ("outdated", "Reference changed")
    assert cards[2].state == "complete"  # Benjamin is not on page 2
    assert Illustration.objects.filter(status__in=("queued", "generating")).count() == 0

    drain(services.queue_page(page=cards[1].page, regenerate=True).run.pk)
    # Page 2 was drawn in the earlier run: still "complete", nothing changed for it.
    assert {c.page.number: c.state for c in page_cards(project)} == {1: "complete", 2: "complete"}

    characters.update_character(
        character=made["Benjamin"],
        name="Benjamin",
        description="Benjamin in a new hat.",
        aliases="",
        kind="character",
    )
    assert page_cards(project)[0].outdated_reason == "Reference changed"


def test_the_style_reference_changing_marks_every_illustrated_page_it_went_with(
    cast, recording, drain
):
    project, style, made = cast
    page = project.pages.get(number=1)
    characters.set_page_characters(page=page, characters=[made["Benjamin"]])
    drain(services.generate_missing(project=project).run.pk)
    characters.add_reference(character=style, image=picture((250, 250, 0)))
    assert [c.outdated_reason for c in page_cards(project)] == ["Reference changed"] * 2


def test_a_page_whose_characters_filled_the_limit_ignores_a_new_style_reference(
    cast, recording, drain
):
    project, style, _ = cast  # page 1's three characters fill the provider's 2
    drain(services.generate_missing(project=project).run.pk)
    characters.add_reference(character=style, image=picture((250, 250, 0)))
    assert [c.outdated_reason for c in page_cards(project)] == ["", "Reference changed"]


def test_a_changed_prompt_still_reads_prompt_changed(cast, recording, drain):
    project, _, _ = cast
    drain(services.generate_missing(project=project).run.pk)
    project.pages.filter(number=2).update(prompt="A quiet garden at dusk.")
    assert [c.outdated_reason for c in page_cards(project)] == ["", "Prompt changed"]


def test_the_review_cards_read_references_in_a_constant_number_of_queries(
    make_project, recording, drain, media
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries(pages: int) -> int:
        project = make_project(pages=pages, title=f"Book {pages}")
        for n in range(3):
            character = characters.create_character(
                project=project, name=f"Fox{n}", image=picture((n, n, n))
            )
            character.pages.set(project.pages.all())
        drain(services.generate_missing(project=project).run.pk)
        with CaptureQueriesContext(connection) as captured:
            assert {card.state for card in page_cards(project)} == {"complete"}
        return len(captured)

    assert queries(2) == queries(12)


# --- real workers ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_real_workers_halt_sheets_and_pages_together_and_resume_draws_each_once(
    make_project, fake_openai, qcluster
):
    project = make_project(pages=4, title="Cast")
    cast = [
        characters.create_character(project=project, name=name, description=f"{name}, always.")
        for name in ("Peter", "Flopsy", "Mopsy")
    ]
    fake_openai.default = "402"
    qcluster(**openai_env(fake_openai, STUDIO_WORKERS=2))
    for character in cast:
        services.draw_sheet(character=character)
    services.generate_missing(project=project)
    wait_until(lambda: Run.objects.get().state == "halted", timeout=30)
    wait_until(lambda: fake_openai.in_flight == 0, timeout=10)
    assert fake_openai.call_count - 1 <= 2  # after the halting call: at most the workers
    assert not GenerationAttempt.objects.filter(outcome="success").exists()

    fake_openai.default = "ok"
    calls = fake_openai.call_count
    services.resume(project=project)
    wait_until(lambda: Run.objects.get().state == "finished", timeout=60)
    assert fake_openai.call_count - calls == 3 + 4  # each sheet and each page once
    assert SheetJob.objects.filter(status="complete").count() == 3
    assert sorted(Character.objects.values_list("reference__source", flat=True)) == ["drawn"] * 3
    for job in SheetJob.objects.all():
        assert job.attempts.filter(outcome="success").count() == 1
    assert fake_openai.calls_for("three-quarter view") == 3 + (
        GenerationAttempt.objects.filter(sheet__isnull=False, outcome="out_of_credits").count()
    )


# --- a sheet is not a book run --------------------------------------------------------


def test_drawing_a_sheet_on_a_book_never_generated_is_not_shown_as_a_run(
    make_project, drain, client, editor
):
    import json
    from io import StringIO

    from django.core import mail
    from django.core.management import call_command

    editor.email = "alice@example.com"
    editor.save()
    project = make_project(pages=8)
    peter = characters.create_character(project=project, name="Peter", description="A rabbit.")
    run = draw(peter).run
    assert drain(run.pk, kind="sheet") == 1
    run.refresh_from_db()
    assert run.state == Run.State.FINISHED  # the sheet's own work is over
    assert mail.outbox == []  # no "✗ 0/8, 8 missing" email for drawing a sheet

    client.force_login(editor)
    html = client.get(project.get_absolute_url()).content.decode()
    assert "Not started" in html
    assert "Run finished" not in html
    assert "The run is over" not in html
    assert "Generate Missing Illustrations" in html
    listing = client.get("/").content.decode()
    assert "finished" not in listing
    out = StringIO()
    call_command("generation_status", "--project", str(project.pk), "--json", stdout=out)
    [status] = json.loads(out.getvalue())["projects"]
    assert (status["run"], status["missing"], status["active"]) == (None, 8, 0)

    # Pages joining that run make it the book's run.
    queued = services.generate_missing(project=project)
    assert queued.run.pk != run.pk  # the sheet's run was over: a new one
    out = StringIO()
    call_command("generation_status", "--project", str(project.pk), "--json", stdout=out)
    assert json.loads(out.getvalue())["projects"][0]["run"]["state"] == "running"
