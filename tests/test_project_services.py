"""Each project chooses its image service among those configured; the engine, estimate,
account state and halts follow the project's choice. Real HTTP against the fakes."""

import re

import pytest
from django.urls import reverse

from generation import services
from generation.models import Illustration, ProviderAccount, Run
from studio.models import Project

pytestmark = pytest.mark.django_db

Status = Illustration.Status


def service_field(form: str) -> str:
    """The settings form's image service field (it has others: the trim, the paper)."""
    return re.search(r'<select name="image_service".*?</select>', form, re.S)[0]


def start(project):
    return services.generate_missing(project=project).run


def test_settings_offer_the_configured_services_and_the_choice_draws_the_pictures(
    client, editor, make_project, gemini_settings, fake_gemini, drain
):
    project = make_project(pages=2)
    client.force_login(editor)
    form = client.get(reverse("project-settings", args=[project.pk])).content.decode()
    offered = re.findall(r'<option value="([^"]+)"', service_field(form))
    assert offered == ["embedded", "gemini"]  # the offline renderer, and Gemini's key is set
    # The Model field offers Gemini's models from the catalogue, none of the shut-down ones.
    models_select = re.search(r'<select name="image_model".*?</select>', form, re.S)[0]
    models = re.findall(r'<option value="([^"]+)"', models_select)
    assert models == ["gemini-3.1-flash-image", "gemini-3-pro-image"]
    assert "Gemini (gemini-3.1-flash-image) · $0.067 an image" in form

    response = client.post(
        reverse("project-settings", args=[project.pk]),
        {"title": project.title, "style_guide": "", "image_service": "gemini"},
    )
    assert response.status_code == 302
    assert Project.objects.get(pk=project.pk).image_service == "gemini"
    html = client.get(project.get_absolute_url()).content.decode()
    assert "Image service: Gemini (gemini-3.1-flash-image)" in html
    assert "2 illustrations ≈ $0.13" in html  # the estimate follows the project's service

    drain(start(project).pk)
    assert len(fake_gemini.calls) == 2
    jobs = Illustration.objects.filter(status=Status.COMPLETE)
    assert {(job.provider, job.model) for job in jobs} == {("gemini", "gemini-3.1-flash-image")}
    assert {a.account.split("|")[0] for job in jobs for a in job.attempts.all()} == {"gemini"}


def test_a_service_that_is_not_configured_is_refused(client, editor, make_project):
    project = make_project(pages=1)
    client.force_login(editor)
    response = client.post(
        reverse("project-settings", args=[project.pk]),
        {"title": project.title, "style_guide": "", "image_service": "gemini"},
    )
    assert response.status_code == 422
    assert "Select a valid choice" in response.content.decode()
    assert Project.objects.get(pk=project.pk).image_service == ""


def test_projects_on_different_services_halt_apart(
    make_project, openai_settings, fake_openai, gemini_settings, fake_gemini, drain
):
    on_openai = make_project(pages=2, title="On OpenAI")
    on_gemini = make_project(pages=2, title="On Gemini")
    Project.objects.filter(pk=on_gemini.pk).update(image_service="gemini")
    fake_openai.default = "402"
    run_openai, run_gemini = start(on_openai), start(on_gemini)
    drain(run_openai.pk)
    drain(run_gemini.pk)
    run_openai.refresh_from_db()
    run_gemini.refresh_from_db()
    assert (run_openai.state, run_gemini.state) == ("halted", "finished")
    assert len(fake_gemini.calls) == 2


def test_a_halted_project_continues_its_remaining_pages_with_another_service(
    client, editor, make_project, openai_settings, fake_openai, gemini_settings, fake_gemini, drain
):
    project = make_project(pages=3)
    other = make_project(pages=1, title="Still on OpenAI")
    fake_openai.script.extend(["ok", "402"])
    run = start(project)
    drain(run.pk)
    run.refresh_from_db()
    assert (run.state, run.halt_reason) == ("halted", "out_of_credits")
    client.force_login(editor)
    html = client.get(project.get_absolute_url()).content.decode()
    assert "Continue the remaining pages with Gemini (gemini-3.1-flash-image)" in html

    response = client.post(
        reverse("project-switch-service", args=[project.pk]), {"service": "gemini"}
    )
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.state == Run.State.RUNNING
    drain(run.pk)
    assert Illustration.objects.filter(page__project=project, status=Status.COMPLETE).count() == 3
    assert len(fake_gemini.calls) == 2  # the pages left; the one drawn before stays
    # The old account is still halted for the projects on it.
    assert ProviderAccount.objects.get(key__startswith="openai").state == "halted"
    other_run = start(other)
    drain(other_run.pk)
    other_run.refresh_from_db()
    assert other_run.state == Run.State.HALTED


def test_switching_to_an_unconfigured_service_is_a_bad_request(client, editor, make_project):
    project = make_project(pages=1)
    client.force_login(editor)
    response = client.post(reverse("project-switch-service", args=[project.pk]), {"service": "fal"})
    assert response.status_code == 400


@pytest.mark.django_db(transaction=True)
def test_an_asynchronous_service_keeps_its_job_id_and_shows_the_queue(
    make_project, fal_settings, fake_fal
):
    import threading

    from django.db import connection

    from generation import engine
    from tests.conftest import wait_until

    fal_settings.STUDIO_PROVIDER_TIMEOUT = 15.0  # one call follows the queue to the end
    fake_fal.in_progress_polls = None  # the request runs until the test says
    project = make_project(pages=1)
    Project.objects.filter(pk=project.pk).update(image_service="fal")
    run = start(project)

    def work():
        try:
            engine.run_next_job(run.pk, sleep=lambda seconds: None)
        finally:
            connection.close()

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    seen = set()

    def generating() -> bool:
        job = Illustration.objects.get()
        seen.add(job.progress_note)
        return job.progress_note == "Generating" and bool(job.provider_job_id)

    wait_until(generating, timeout=10, interval=0.02)
    assert "In queue (position 0)" in seen or "In queue (position 1)" in seen
    fake_fal.finish.set()
    worker.join(timeout=10)
    job = Illustration.objects.get()
    assert (job.status, job.progress_note) == (Status.COMPLETE, "")
    assert fake_fal.submits == 1


@pytest.mark.django_db(transaction=True)
def test_a_fal_request_in_flight_when_its_worker_dies_is_polled_not_paid_again(
    make_project, fal_settings, fake_fal, drain
):
    from datetime import timedelta

    from generation.clock import db_now
    from generation.models import GenerationAttempt

    project = make_project(pages=1)
    Project.objects.filter(pk=project.pk).update(image_service="fal")
    run = start(project)
    job = Illustration.objects.get()
    # A worker submitted the request, stored its id, and was killed while polling.
    from generation.providers.base import ImageRequest
    from generation.providers.fal import FalProvider

    request_id = FalProvider().create(
        ImageRequest(prompt="a fox", size="256x256", seed=1, idempotency_key="k")
    )
    Illustration.objects.filter(pk=job.pk).update(
        status=Status.GENERATING,
        claimed_by="dead",
        provider_job_id=request_id,
        lease_expires_at=db_now() - timedelta(seconds=1),
    )
    GenerationAttempt.objects.create(illustration=job, number=1, started_at=db_now())
    services.sweep()
    drain(run.pk)
    job.refresh_from_db()
    assert job.status == Status.COMPLETE
    assert fake_fal.submits == 1  # the next worker polled the same request


def test_the_settings_show_and_keep_a_service_no_longer_configured(client, editor, make_project):
    project = make_project(pages=1)
    Project.objects.filter(pk=project.pk).update(image_service="gemini")  # its key was removed
    client.force_login(editor)
    url = reverse("project-settings", args=[project.pk])

    form = client.get(url).content.decode()
    assert re.findall(r'<option value="([^"]+)"( selected)?', service_field(form)) == [
        ("gemini", " selected"),
        ("embedded", ""),
    ]
    assert "Gemini · not configured now" in form

    response = client.post(url, {"title": "Renamed", "style_guide": "", "image_service": "gemini"})
    assert response.status_code == 302
    project.refresh_from_db()
    assert (project.title, project.image_service) == ("Renamed", "gemini")  # only the title


def test_the_settings_form_shows_its_fields_in_order(client, editor, make_project):
    project = make_project(pages=1)
    client.force_login(editor)
    page = client.get(reverse("project-settings", args=[project.pk])).content.decode()
    form = re.search(r'<form method="post" class="form" novalidate>(.*?)</form>', page, re.S)[1]
    names = re.findall(r'<(?:input|select|textarea)[^>]*\bname="([^"]+)"', form)
    assert names == [
        "csrfmiddlewaretoken",
        "title",
        "style_guide",
        "image_service",
        "image_model",
        "budget",
        "max_concurrent",
        "requests_per_minute",
        "author",
        "trim",
        "custom_trim",
        "paper",
        "cover_page",
    ]
