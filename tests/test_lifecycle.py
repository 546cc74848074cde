"""The lifecycle guard: a model its service has shut down is refused before any call, with
its date and replacement, and the replacement is one click away; a model the service says it
no longer has halts the same way; within 30 days of a shutdown the studio warns. Real HTTP
against the fakes; the engine works in this process with an injected clock."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from generation import services
from generation.clock import db_now
from generation.models import GenerationAttempt, Illustration, ProviderAccount, Run, SpendEntry
from studio.models import Project

pytestmark = pytest.mark.django_db

Status = Illustration.Status


def start(project):
    return services.generate_missing(project=project).run


@pytest.fixture
def on_gemini(settings, gemini_settings):
    settings.STUDIO_IMAGE_PROVIDER = "gemini"
    return settings


def test_a_shut_down_model_is_refused_before_any_call_and_its_replacement_is_one_click(
    client, editor, make_project, on_gemini, fake_gemini, drain
):
    on_gemini.GEMINI_IMAGE_MODEL = "gemini-2.5-flash-image"  # shut down on 2026-10-02
    project = make_project(pages=3)
    run = start(project)
    drain(run.pk)

    run.refresh_from_db()
    assert (run.state, run.halt_reason) == ("halted", "config")
    assert "2026-10-02" in run.message and "gemini-3.1-flash-image" in run.message
    assert fake_gemini.calls == []  # the service heard nothing
    assert GenerationAttempt.objects.count() == 0
    assert SpendEntry.objects.count() == 0
    assert Illustration.objects.filter(status=Status.QUEUED).count() == 3
    assert not ProviderAccount.objects.filter(state="halted").exists()  # not the account's

    client.force_login(editor)
    html = client.get(project.get_absolute_url()).content.decode()
    assert "shut down by the service on 2026-10-02" in html
    assert "Continue with gemini-3.1-flash-image" in html
    settings_page = client.get(reverse("project-settings", args=[project.pk])).content.decode()
    assert "Use gemini-3.1-flash-image" in settings_page

    response = client.post(
        reverse("project-switch-model", args=[project.pk]), {"model": "gemini-3.1-flash-image"}
    )
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.state == Run.State.RUNNING
    drain(run.pk)
    assert Illustration.objects.filter(page__project=project, status=Status.COMPLETE).count() == 3
    assert [call["model"] for call in fake_gemini.calls] == ["gemini-3.1-flash-image"] * 3
    assert Project.objects.get(pk=project.pk).image_model == "gemini-3.1-flash-image"


def test_a_projects_own_shut_down_model_halts_its_run_and_no_other(
    make_project, openai_settings, fake_openai, drain
):
    retired = make_project(pages=2, title="On dall-e-3")
    Project.objects.filter(pk=retired.pk).update(image_model="dall-e-3")  # shut down 2026-05-12
    current = make_project(pages=2, title="On the studio's model")
    retired_run, current_run = start(retired), start(current)
    drain(retired_run.pk)
    drain(current_run.pk)

    retired_run.refresh_from_db()
    current_run.refresh_from_db()
    assert (retired_run.state, retired_run.halt_reason) == ("halted", "config")
    assert "2026-05-12" in retired_run.message and "gpt-image-2" in retired_run.message
    assert current_run.state == Run.State.FINISHED
    assert {call["body"]["model"] for call in fake_openai.calls} == {"gpt-image-1"}
    assert len(fake_openai.calls) == 2


def test_a_model_the_service_no_longer_has_halts_with_the_same_offer(
    client, editor, make_project, on_gemini, fake_gemini, drain
):
    project = make_project(pages=2)
    Project.objects.filter(pk=project.pk).update(image_model="gemini-3-pro-image")
    fake_gemini.models.discard("gemini-3-pro-image")  # the service answers 404 NOT_FOUND
    run = start(project)
    drain(run.pk)

    run.refresh_from_db()
    assert (run.state, run.halt_reason) == ("halted", "config")
    assert "gemini-3-pro-image" in run.message
    assert "offer gemini-3.1-flash-image in one click" in run.message
    assert [call["model"] for call in fake_gemini.calls] == ["gemini-3-pro-image"]  # one 404
    client.force_login(editor)
    html = client.get(project.get_absolute_url()).content.decode()
    assert "Continue with gemini-3.1-flash-image" in html

    client.post(
        reverse("project-switch-model", args=[project.pk]), {"model": "gemini-3.1-flash-image"}
    )
    drain(run.pk)
    assert Illustration.objects.filter(page__project=project, status=Status.COMPLETE).count() == 2


@pytest.mark.parametrize(
    ("service", "settings_fixture", "fake_fixture"),
    [
        ("openai", "openai_settings", "fake_openai"),
        ("gemini", "gemini_settings", "fake_gemini"),
        ("openai-chat", "chat_image_settings", "fake_chat_images"),
        ("replicate", "replicate_image_settings", "fake_predictions"),
        ("fal", "fal_settings", "fake_fal"),
    ],
)
def test_every_service_saying_the_model_is_gone_is_a_config_error_about_the_model(
    request, service, settings_fixture, fake_fixture
):
    """Each service words "no such model" its own way (OpenAI 404 model_not_found, Gemini
    404 NOT_FOUND, OpenRouter 400 "not a valid model ID", Replicate 404 problem+json, fal 404
    "Application … not found"); each is a config error naming the model's setting, which the
    engine answers with a halt and the one-click offer."""
    from generation.providers import get_provider
    from generation.providers.base import ConfigError, ImageRequest

    request.getfixturevalue(settings_fixture)
    fake = request.getfixturevalue(fake_fixture)
    provider = get_provider(service)
    models = fake.models
    if isinstance(models, dict):
        models.pop(provider.model.split(":")[0], None)
    else:
        models.discard(provider.model)
    call = ImageRequest(prompt="a fox", size="1024x1024", seed=1, idempotency_key="k")
    with pytest.raises(ConfigError) as raised:
        if getattr(provider, "asynchronous", False):
            provider.create(call)
        else:
            provider.generate(call)
    assert raised.value.setting == provider.model_setting


def test_only_a_current_model_of_the_projects_service_can_be_chosen(
    client, editor, make_project, on_gemini
):
    project = make_project(pages=1)
    client.force_login(editor)
    url = reverse("project-switch-model", args=[project.pk])
    for model in ("gemini-2.5-flash-image", "gpt-image-2", "nonsense"):
        assert client.post(url, {"model": model}).status_code == 400
    assert Project.objects.get(pk=project.pk).image_model == ""


def retiring_in(days: int):
    """Edit the catalogue: gemini-3-pro-image is shut down `days` from today."""
    shutdown = (db_now() + timedelta(days=days)).date().isoformat()
    return lambda text: text.replace(
        '[gemini.models."gemini-3-pro-image"]\nreleased = "2026-05-28"\n',
        '[gemini.models."gemini-3-pro-image"]\nreleased = "2026-05-28"\n'
        f'shutdown = "{shutdown}"\nreplacement = "gemini-3.1-flash-image"\n',
    )


def test_a_model_within_30_days_of_its_shutdown_is_warned_about_with_its_replacement(
    client, editor, make_project, on_gemini, edited_catalogue
):
    edited_catalogue(retiring_in(10))
    project = make_project(pages=1)
    Project.objects.filter(pk=project.pk).update(image_model="gemini-3-pro-image")
    client.force_login(editor)
    settings_page = client.get(reverse("project-settings", args=[project.pk])).content.decode()
    assert "gemini-3-pro-image will be shut down on" in settings_page
    assert "(in 10 days)" in settings_page
    assert "Use gemini-3.1-flash-image" in settings_page
    review = client.get(project.get_absolute_url()).content.decode()
    assert "gemini-3-pro-image will be shut down on" in review
    assert "Use gemini-3.1-flash-image" in review


def test_the_settings_form_names_the_rule_a_model_breaks(client, editor, make_project, settings):
    settings.OPENAI_API_KEY = "sk-test"
    settings.STUDIO_IMAGE_SIZE = "2048x2048"
    project = make_project(pages=1)
    client.force_login(editor)
    form = {"title": "A Book", "style_guide": "", "image_service": "openai"}
    url = reverse("project-settings", args=[project.pk])
    response = client.post(url, {**form, "image_model": "gpt-image-1.5"})
    assert response.status_code == 422
    assert (
        "gpt-image-1.5 takes only these sizes: 1024x1024, 1536x1024, 1024x1536, auto. The "
        "studio draws at 2048x2048 (STUDIO_IMAGE_SIZE)."
    ) in response.content.decode()
    settings.STUDIO_IMAGE_SIZE = "1000x1000"
    response = client.post(url, {**form, "image_model": "gpt-image-2"})
    assert response.status_code == 422
    assert "gpt-image-2 takes 1000x1000 only with both sides a multiple of 16." in (
        response.content.decode()
    )
    settings.STUDIO_IMAGE_SIZE = "2048x1152"
    response = client.post(url, {**form, "image_model": "gpt-image-2"})
    assert response.status_code == 302
    project.refresh_from_db()
    assert (project.image_service, project.image_model) == ("openai", "gpt-image-2")


def check(*args) -> tuple[int, dict]:
    out = StringIO()
    try:
        call_command("check_services", "--json", *args, stdout=out)
        code = 0
    except CommandError as error:
        code = error.returncode
    return code, json.loads(out.getvalue())


def test_check_services_warns_within_30_days_and_fails_under_strict(
    settings, gemini_settings, edited_catalogue
):
    edited_catalogue(retiring_in(10))
    settings.GEMINI_IMAGE_MODEL = "gemini-3-pro-image"
    settings.STUDIO_IMAGE_SIZE = "1024x1024"
    code, report = check()
    assert code == 0
    [gemini] = [row for row in report["services"] if row["name"] == "gemini"]
    assert gemini["lifecycle"]["state"] == "retiring"
    assert gemini["lifecycle"]["replacement"] == "gemini-3.1-flash-image"
    assert report["warnings"] == [gemini["lifecycle"]["message"]]
    assert check("--strict")[0] == 1


def test_check_services_refuses_a_shut_down_model(settings, gemini_settings):
    settings.GEMINI_IMAGE_MODEL = "gemini-2.5-flash-image"
    settings.STUDIO_IMAGE_SIZE = "1024x1024"
    code, report = check()
    assert code == 1
    [gemini] = [row for row in report["services"] if row["name"] == "gemini"]
    assert gemini["lifecycle"] == {
        "state": "retired",
        "shutdown": "2026-10-02",
        "replacement": "gemini-3.1-flash-image",
        "message": "gemini-2.5-flash-image was shut down by the service on 2026-10-02: the "
        "studio no longer calls it. Use gemini-3.1-flash-image instead.",
    }
    assert gemini["refused"] is True and report["refused"] is True


def test_check_services_prints_the_catalogues_table():
    out = StringIO()
    call_command("check_services", "--table", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "| service | model | per image | references | batch | webhooks | shutdown |"
    assert len(lines) == 2 + 5  # one default per service
