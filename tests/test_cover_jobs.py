"""The cover's own generated picture: a job of its own kind on the one engine (the same
claim, retries, halts, attempt rows and ledger as pages), drawn by the project's service
over real HTTP against the fake OpenAI-compatible service; the cover PDF uses it when the
editor chose it; the settings page chooses, previews and draws it again."""

import io
from datetime import timedelta

import pytest
from django.urls import reverse
from PIL import Image
from pypdf import PdfReader

from generation import references, services
from generation.clock import db_now
from generation.fakes.openai import png_bytes
from generation.models import CoverJob, GenerationAttempt, Run, SpendEntry
from generation.selectors import book_runs
from studio import characters
from studio import services as studio_services
from studio.characters import check_reference_image
from studio.geometry import INCH, Book, parse_trim, spine_width
from studio.models import Export, Project
from studio.printing import cover_picture
from studio.tasks import run_export
from tests.conftest import openai_env, wait_until

pytestmark = pytest.mark.django_db

Status = CoverJob.Status
Outcome = GenerationAttempt.Outcome


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def fox(make_project, media):
    """Three pages, a main character with a chosen picture and one without."""
    project = make_project(pages=3, title="The River Fox", style_guide="Soft watercolour.")
    project.author = "Ada Fox"
    project.save()
    characters.create_character(
        project=project,
        name="Fern",
        description="A small red fox in a green scarf.",
        image=check_reference_image(png_bytes((40, 40), (200, 60, 0))),
        every_page=True,
    )
    characters.create_character(project=project, name="Otto", description="An old otter.")
    return project


def draw(project):
    return services.draw_cover(project=project)


# --- the cover on the engine -----------------------------------------------------------


def test_a_cover_is_drawn_once_from_the_title_and_the_characters_and_paid_once(
    fox, openai_settings, fake_openai, drain
):
    queued = draw(fox)
    assert queued.count == 1
    assert draw(fox).count == 0  # already on its way: not queued twice

    assert drain(queued.run.pk, kind="cover") == 1
    job = CoverJob.objects.get()
    assert job.status == Status.COMPLETE
    assert (job.width, job.height) == (64, 64)
    with job.image.open("rb") as stored:
        assert Image.open(stored).size == (64, 64)
    (call,) = fake_openai.calls
    prompt = call["prompt"]
    assert "“The River Fox”" in prompt
    assert "Fern (A small red fox in a green scarf)" in prompt
    assert "Otto (An old otter)" in prompt
    assert prompt.endswith("Style guide: Soft watercolour.")
    assert prompt.endswith(job.prompt_sent)  # after the words naming the references
    assert len(call["images"]) == 1  # Fern's chosen picture went with it; Otto has none
    attempt = job.attempts.get()
    assert (attempt.number, attempt.outcome) == (1, Outcome.SUCCESS)
    assert call["idempotency_key"] == attempt.idempotency_key != ""
    entry = SpendEntry.objects.get()
    assert (entry.attempt_id, entry.kind, entry.project_id) == (attempt.pk, "cover", fox.pk)
    assert entry.amount == attempt.cost > 0
    queued.run.refresh_from_db()
    assert queued.run.state == Run.State.FINISHED


def test_the_editors_cover_prompt_is_sent_in_place_of_the_default(
    fox, openai_settings, fake_openai, drain
):
    fox.cover_prompt = "Fern asleep under a willow at dusk."
    fox.save()
    drain(draw(fox).run.pk, kind="cover")
    (call,) = fake_openai.calls
    sent = "Fern asleep under a willow at dusk.\n\nStyle guide: Soft watercolour."
    assert CoverJob.objects.get().prompt_sent == sent
    assert call["prompt"].endswith(f"\n\n{sent}")
    assert "“The River Fox”" not in call["prompt"]


def test_a_cover_retries_503_and_records_every_attempt(fox, openai_settings, fake_openai, drain):
    fake_openai.script.extend(["503", "503"])
    waits = []
    drain(draw(fox).run.pk, kind="cover", waits=waits)

    job = CoverJob.objects.get()
    assert job.status == Status.COMPLETE
    outcomes = [(a.number, a.outcome, a.http_status) for a in job.attempts.order_by("number")]
    assert outcomes == [(1, "transient", 503), (2, "transient", 503), (3, "success", 200)]
    assert len(waits) == 2
    assert fake_openai.call_count == 3
    assert SpendEntry.objects.count() == 1


def test_no_credits_halts_the_covers_run_and_resume_draws_it_once(
    fox, openai_settings, fake_openai, drain
):
    fake_openai.default = "402"
    run = draw(fox).run
    drain(run.pk, kind="cover")
    run.refresh_from_db()
    assert (run.state, run.halt_reason) == ("halted", "out_of_credits")
    job = CoverJob.objects.get()
    assert (job.status, job.attempts_made) == (Status.QUEUED, 0)
    assert fake_openai.call_count == 1

    fake_openai.default = "ok"
    services.resume(project=fox)
    assert drain(run.pk, kind="cover") == 1
    assert fake_openai.call_count == 2
    assert CoverJob.objects.get().status == Status.COMPLETE
    assert SpendEntry.objects.count() == 1


def test_a_lost_cover_call_is_resent_with_its_key_never_paid_for_anew(
    fox, openai_settings, fake_openai, drain
):
    run = draw(fox).run
    job = CoverJob.objects.get()
    CoverJob.objects.filter(pk=job.pk).update(
        status=Status.GENERATING, claimed_by="dead", lease_expires_at=db_now() - timedelta(1)
    )
    GenerationAttempt.objects.create(
        cover=job, number=1, started_at=db_now(), idempotency_key="studio-lost-cover"
    )
    assert services.sweep()["requeued"] == 1
    drain(run.pk, kind="cover")

    assert [call["idempotency_key"] for call in fake_openai.calls] == ["studio-lost-cover"]
    job.refresh_from_db()
    assert [a.outcome for a in job.attempts.order_by("number")] == [Outcome.LOST, Outcome.SUCCESS]
    assert job.status == Status.COMPLETE


def test_stop_cancels_a_queued_cover_and_calls_nothing(fox, openai_settings, fake_openai, drain):
    run = draw(fox).run
    services.stop(project=fox)
    assert drain(run.pk, kind="cover") == 0
    assert CoverJob.objects.get().status == Status.CANCELED
    assert fake_openai.call_count == 0


def test_drawing_a_cover_alone_is_not_a_run_of_the_book(fox, openai_settings, fake_openai, drain):
    run = draw(fox).run
    drain(run.pk, kind="cover")
    run.refresh_from_db()
    assert run.state == Run.State.FINISHED  # the cover's own work is over
    assert not book_runs().filter(pk=run.pk).exists()  # but it never illustrated the book
    pages = services.generate_missing(project=fox).run
    assert list(book_runs().filter(project=fox)) == [pages]


# --- the cover PDF --------------------------------------------------------------------


def cover_pdf(project, trim="8.5x8.5", paper="white") -> PdfReader:
    export = Export.objects.create(project=project, format="cover", trim=trim, paper=paper)
    run_export(export.pk)
    export.refresh_from_db()
    assert export.status == "complete", export.error
    with export.file.open("rb") as handle:
        return PdfReader(io.BytesIO(handle.read())), export


def test_the_cover_pdf_uses_the_generated_cover_when_chosen_and_keeps_its_width(
    fox, openai_settings, fake_openai, drain
):
    drain(services.generate_missing(project=fox).run.pk)
    page_picture = cover_picture(fox)
    assert page_picture.page.number == 1
    fox.cover_source = Project.CoverSource.GENERATED
    fox.save()
    assert cover_picture(fox) == page_picture  # none drawn yet: a page's picture stands in
    drain(draw(fox).run.pk, kind="cover")
    cover = CoverJob.objects.get()
    assert cover_picture(fox) == cover

    trim = parse_trim("8.5x8.5")
    for paper in ("white", "cream"):
        reader, export = cover_pdf(fox, paper=paper)
        (page,) = reader.pages
        spine = spine_width(Book(trim=trim, pages=3).sheet_count, paper)
        expected = 2 * trim.width_in * INCH + spine + 0.25 * INCH
        assert float(page.mediabox.width) == pytest.approx(expected, abs=0.01)
        assert export.report == [
            {
                "page": "Cover (its generated picture)",
                "pixels": [64, 64],
                "dpi": 7,
                "resampled": False,
            }
        ]

    fox.cover_source = Project.CoverSource.PAGE
    fox.save()
    _, export = cover_pdf(fox)
    assert export.report[0]["page"] == "Cover (page 1)"


# --- the settings page: choose, preview, draw again ----------------------------------


@pytest.fixture
def signed_in(client, editor):
    client.force_login(editor)
    return client


def cover_section(client, project) -> str:
    htmx = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "cover"}
    response = client.get(reverse("project-settings", args=[project.pk]), **htmx)
    assert response.status_code == 200
    return response.content.decode()


def test_the_editor_draws_previews_and_chooses_the_generated_cover_in_the_settings(
    fox, signed_in, openai_settings, fake_openai, drain
):
    drain(services.generate_missing(project=fox).run.pk)
    html = signed_in.get(reverse("project-settings", args=[fox.pk])).content.decode()
    assert 'id="cover"' in html
    first = fox.pages.get(number=1).illustrations.get(status="complete")
    assert f'src="/images/{first.pk}/thumbnail/"' in html  # the page's picture, on the cover
    assert "Not drawn yet." in html
    assert "Fern (A small red fox in a green scarf)" in html  # the default prompt, shown

    draw_url = reverse("project-cover-draw", args=[fox.pk])
    response = signed_in.post(draw_url, {"cover_prompt": "  Fern on a hill at dawn.  "})
    assert response.status_code == 302
    assert response["Location"] == reverse("project-settings", args=[fox.pk]) + "#cover"
    signed_in.post(draw_url, {"cover_prompt": "Fern on a hill at dawn."})
    job = CoverJob.objects.get()  # asked twice: queued once
    fox.refresh_from_db()
    assert fox.cover_prompt == "Fern on a hill at dawn."
    section = cover_section(signed_in, fox)
    assert 'hx-trigger="every 2s"' in section  # polls while it is drawn
    assert "Drawing the cover's picture: queued." in section

    drain(job.run_id, kind="cover")
    section = cover_section(signed_in, fox)
    assert "hx-trigger" not in section
    assert f'src="/covers/{job.pk}/"' in section
    assert "Draw it again" in section
    picture = signed_in.get(reverse("cover-image", args=[job.pk]))
    assert picture.status_code == 200
    assert Image.open(io.BytesIO(b"".join(picture.streaming_content))).size == (64, 64)

    export_url = reverse("project-export", args=[fox.pk])
    front = "<span data-cover-front>{}</span>"
    assert front.format("the picture of page 1") in signed_in.get(export_url).content.decode()
    choose_url = reverse("project-cover-choose", args=[fox.pk])
    assert signed_in.post(choose_url, {"source": "generated"}).status_code == 302
    assert front.format("its own generated picture") in signed_in.get(export_url).content.decode()
    fox.refresh_from_db()
    assert fox.cover_source == "generated"
    assert cover_picture(fox) == job
    section = cover_section(signed_in, fox)
    assert 'name="source" value="page"' in section  # the other one is offered now
    assert 'name="source" value="generated"' not in section

    # Drawn again: the new one is the cover's, the earlier one stays stored.
    signed_in.post(draw_url, {"cover_prompt": ""})
    again = CoverJob.objects.exclude(pk=job.pk).get()
    drain(again.run_id, kind="cover")
    assert cover_picture(fox) == again
    assert fake_openai.calls[-1]["prompt"].endswith(
        references.default_cover_prompt(fox) + "\n\nStyle guide: Soft watercolour."
    )


def test_bad_cover_requests_say_why_and_queue_nothing(
    fox, signed_in, other_editor, client, openai_settings, drain
):
    response = signed_in.post(reverse("project-cover-choose", args=[fox.pk]), {"source": "gold"})
    assert response.status_code == 400
    assert response.content.decode() == "source must be one of page, generated."
    response = signed_in.post(
        reverse("project-cover-draw", args=[fox.pk]), {"cover_prompt": "x" * 2001}
    )
    assert response.status_code == 422
    assert "has at most 2000 characters (it has 2001)" in response.content.decode()
    assert CoverJob.objects.count() == 0

    drain(draw(fox).run.pk, kind="cover")
    job = CoverJob.objects.get()
    client.force_login(other_editor)  # another editor's cover is simply not found
    assert client.get(reverse("cover-image", args=[job.pk])).status_code == 404
    assert client.post(reverse("project-cover-draw", args=[fox.pk])).status_code == 404


# --- real workers --------------------------------------------------------------------


def test_real_workers_halt_the_cover_with_the_pages_and_resume_draws_each_once(
    make_project, fake_openai, qcluster
):
    project = make_project(pages=3, title="Night Garden")
    characters.create_character(project=project, name="Moth", description="A grey moth.")
    fake_openai.default = "402"
    qcluster(**openai_env(fake_openai, STUDIO_WORKERS=2))
    services.draw_cover(project=project)
    services.generate_missing(project=project)
    wait_until(lambda: Run.objects.get().state == "halted", timeout=30)
    wait_until(lambda: fake_openai.in_flight == 0, timeout=10)
    assert not GenerationAttempt.objects.filter(outcome="success").exists()

    fake_openai.default = "ok"
    calls = fake_openai.call_count
    services.resume(project=project)
    wait_until(lambda: Run.objects.get().state == "finished", timeout=60)
    assert fake_openai.call_count - calls == 1 + 3  # the cover and each page once
    job = CoverJob.objects.get()
    assert job.status == Status.COMPLETE
    assert job.attempts.filter(outcome="success").count() == 1
    assert "Moth (A grey moth)" in job.prompt_sent
    assert SpendEntry.objects.filter(kind="cover").count() == 1
    assert SpendEntry.objects.count() == 4


def test_deleting_the_project_deletes_its_covers_files(
    fox, openai_settings, fake_openai, drain, media, django_capture_on_commit_callbacks
):
    drain(draw(fox).run.pk, kind="cover")
    stored = media / CoverJob.objects.get().image.name
    assert stored.is_file()
    with django_capture_on_commit_callbacks(execute=True):
        studio_services.delete_project(project=fox)
    assert not stored.exists()
    assert CoverJob.objects.count() == 0
