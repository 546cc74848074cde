"""manage.py check_services: free look-ups against every configured service's fake; no
paid call, exit code 1 on any refusal, 2 on bad usage."""

import json
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from generation import catalogue
from tests.conftest import CHAT_TEST_KEY, FAL_TEST_KEY, GEMINI_TEST_KEY, ROOT, TEST_API_KEY


@pytest.fixture
def every_service(settings, fake_openai, fake_gemini, fake_chat_images, fake_predictions, fake_fal):
    settings.OPENAI_BASE_URL = fake_openai.url
    settings.OPENAI_API_KEY = TEST_API_KEY
    settings.GEMINI_BASE_URL = fake_gemini.url
    settings.GEMINI_API_KEY = GEMINI_TEST_KEY
    settings.STUDIO_CHAT_IMAGE_BASE_URL = fake_chat_images.url
    settings.STUDIO_CHAT_IMAGE_API_KEY = CHAT_TEST_KEY
    settings.REPLICATE_BASE_URL = fake_predictions.url
    settings.REPLICATE_API_TOKEN = "r8_test_token"
    settings.FAL_QUEUE_URL = fake_fal.origin
    settings.FAL_PLATFORM_URL = fake_fal.platform_url
    settings.FAL_KEY = FAL_TEST_KEY
    settings.STUDIO_PROVIDER_TIMEOUT = 2.0
    settings.STUDIO_IMAGE_SIZE = "1024x1024"  # a size every default model takes
    return settings


def run_json() -> dict:
    out = StringIO()
    call_command("check_services", "--json", stdout=out)
    return json.loads(out.getvalue())


def states(report: dict) -> dict:
    return {
        row["name"]: (row["key"]["state"], row["model_check"]["state"])
        for row in report["services"]
    }


def test_it_checks_every_configured_service_without_a_paid_call(
    every_service, fake_openai, fake_gemini, fake_chat_images, fake_predictions, fake_fal
):
    report = run_json()
    assert states(report) == {
        "embedded": ("not checked", "not checked"),
        "openai": ("accepted", "accepted"),
        "gemini": ("accepted", "accepted"),
        "openai-chat": ("accepted", "accepted"),
        "replicate": ("accepted", "accepted"),
        "fal": ("not checked", "accepted"),
    }
    assert report["refused"] is False
    assert [row["price"] for row in report["services"]] == [
        "0",
        "0.07",
        "0.067",
        "0.067",
        "0.03",
        "0.03",
    ]
    assert fake_openai.call_count == 0
    assert fake_gemini.call_count == 0
    assert fake_chat_images.call_count == 0
    assert fake_predictions.creates == 0
    assert fake_fal.call_count == 0


def test_a_refused_key_exits_1_and_says_which(every_service, fake_gemini):
    fake_gemini.valid_keys = {"another"}
    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("check_services", "--json", stdout=out)
    assert raised.value.returncode == 1
    assert str(raised.value) == "refused by: gemini"
    report = json.loads(out.getvalue())
    assert states(report)["gemini"] == ("refused", "not checked")
    assert report["refused"] is True


@pytest.mark.parametrize(
    ("service", "setting", "value"),
    [
        ("openai", "STUDIO_IMAGE_MODEL", "gpt-imgae-1"),
        ("gemini", "GEMINI_IMAGE_MODEL", "gemini-2.5-flash-imag"),
        ("openai-chat", "STUDIO_CHAT_IMAGE_MODEL", "google/gemini-2.5-flash-imag"),
        ("replicate", "STUDIO_REPLICATE_IMAGE_MODEL", "black-forest-labs/flux-schnel"),
        ("fal", "STUDIO_FAL_IMAGE_MODEL", "fal-ai/flux/schnel"),
    ],
)
def test_an_unknown_model_is_refused(every_service, service, setting, value):
    setattr(every_service, setting, value)
    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("check_services", "--json", stdout=out)
    assert raised.value.returncode == 1
    report = json.loads(out.getvalue())
    assert states(report)[service][1] == "refused"
    assert [name for name, (key, model) in states(report).items() if "refused" in (key, model)] == [
        service
    ]


@pytest.mark.parametrize(
    ("fake", "service"),
    [
        ("fake_openai", "openai"),
        ("fake_chat_images", "openai-chat"),
        ("fake_predictions", "replicate"),
    ],
)
def test_a_refused_key_is_refused_for_each_service(every_service, request, fake, service):
    server = request.getfixturevalue(fake)
    if fake == "fake_predictions":
        server.valid_tokens = {"r8_other"}
    else:
        server.valid_keys = {"other"}
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("check_services", "--json", stdout=out)
    assert states(json.loads(out.getvalue()))[service][0] == "refused"


def test_a_gateway_without_a_key_endpoint_is_not_checked(every_service, fake_chat_images):
    fake_chat_images.key_endpoint = False
    report = run_json()
    assert states(report)["openai-chat"] == ("not checked", "accepted")


def test_an_unreachable_service_is_unknown_not_refused(every_service):
    every_service.GEMINI_BASE_URL = "http://127.0.0.1:9/v1beta"
    report = run_json()
    assert states(report)["gemini"] == ("unknown", "unknown")


def test_only_services_with_keys_are_listed(settings):
    for name in (
        "OPENAI_API_KEY",
        "GEMINI_API_KEY",
        "STUDIO_CHAT_IMAGE_API_KEY",
        "REPLICATE_API_TOKEN",
        "FAL_KEY",
    ):
        setattr(settings, name, "")
    assert states(run_json()) == {"embedded": ("not checked", "not checked")}


def test_the_table_names_each_service_and_state(every_service):
    out = StringIO()
    call_command("check_services", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == [
        "SERVICE",
        "MODEL",
        "PER",
        "IMAGE",
        "KEY",
        "MODEL",
        "CHECK",
        "SHUTDOWN",
    ]
    assert len(lines) == 8
    assert lines[3].split()[:5] == ["openai", "gpt-image-2", "$0.070", "accepted", "accepted"]


def test_bad_usage_exits_2_with_one_line():
    result = subprocess.run(
        [sys.executable, "manage.py", "check_services", "--nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "unrecognized arguments: --nope" in result.stderr


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("embedded", "EmbeddedProvider"),
        ("openai", "OpenAIProvider"),
        ("openai-chat", "ChatImageProvider"),
        ("gemini", "GeminiProvider"),
        ("replicate", "ReplicateImageProvider"),
        ("fal", "FalProvider"),
    ],
)
def test_every_image_provider_name_builds_its_provider(settings, name, cls):
    from generation.providers import get_provider

    settings.STUDIO_IMAGE_PROVIDER = name
    provider = get_provider()
    assert type(provider).__name__ == cls
    assert provider.name == name
    if name != "embedded":
        assert provider.account.startswith(name)
        assert provider.key_setting.endswith(("_KEY", "_TOKEN"))
        assert provider.model_setting.endswith("_MODEL")


def test_the_settings_accept_every_image_provider_name():
    for name in ("embedded", "openai", "openai-chat", "gemini", "replicate", "fal"):
        result = subprocess.run(
            [sys.executable, "-c", "import django; django.setup()"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={
                "DJANGO_SETTINGS_MODULE": "tests.settings",
                "STUDIO_IMAGE_PROVIDER": name,
                "PATH": "/usr/bin:/bin",
            },
            timeout=60,
        )
        assert result.returncode == 0, result.stderr


@pytest.fixture
def upscaler(every_service):
    every_service.STUDIO_UPSCALE_PROVIDER = "replicate"
    every_service.STUDIO_UPSCALE_MODEL = catalogue.default_upscaler("replicate")
    return every_service


def test_without_an_upscaler_the_report_says_none(every_service):
    every_service.STUDIO_UPSCALE_PROVIDER = ""
    assert run_json()["upscaler"] is None


def test_the_upscaler_is_checked_with_free_look_ups_like_its_service(upscaler, fake_predictions):
    report = run_json()
    assert report["upscaler"] == {
        "name": "replicate",
        "model": "nightmareai/real-esrgan:"
        + catalogue.upscaler("replicate", "nightmareai/real-esrgan").version,
        "price": "0.0025",
        "key": {"state": "accepted", "detail": ""},
        "model_check": {"state": "accepted", "detail": ""},
        "catalogue": "listed",
        "refused": False,
        "warning": "",
    }
    assert (report["refused"], report["warnings"]) == (False, [])
    assert fake_predictions.creates == 0


def test_an_upscaler_the_service_does_not_know_is_refused(upscaler):
    upscaler.STUDIO_UPSCALE_MODEL = "nightmareai/real-esrgn"
    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("check_services", "--json", stdout=out)
    assert raised.value.returncode == 1
    assert str(raised.value) == "refused by: upscaler (replicate)"
    report = json.loads(out.getvalue())
    assert report["upscaler"]["model_check"]["state"] == "refused"
    assert report["upscaler"]["catalogue"] == "not listed"
    assert report["warnings"] == [
        "the catalogue does not list nightmareai/real-esrgn as an upscaler"
    ]


def test_a_refused_token_refuses_the_upscaler_too(upscaler, fake_predictions):
    fake_predictions.valid_tokens = {"r8_other"}
    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("check_services", "--json", stdout=out)
    assert str(raised.value) == "refused by: replicate, upscaler (replicate)"
    report = json.loads(out.getvalue())
    assert report["upscaler"]["key"]["state"] == "refused"
    assert report["upscaler"]["model_check"]["state"] == "not checked"


def test_an_upscaler_without_its_key_is_a_warning_and_fails_under_strict(upscaler):
    upscaler.REPLICATE_API_TOKEN = ""
    report = run_json()
    assert report["upscaler"]["key"] == {
        "state": "missing",
        "detail": "REPLICATE_API_TOKEN is not set",
    }
    assert report["upscaler"]["refused"] is False
    warning = (
        "STUDIO_UPSCALE_PROVIDER is replicate but REPLICATE_API_TOKEN is not set: "
        "the print export offers the local resample only"
    )
    assert report["warnings"] == [warning]
    with pytest.raises(CommandError) as raised:
        call_command("check_services", "--strict", stdout=StringIO())
    assert raised.value.returncode == 1
    assert str(raised.value) == f"upscaler (replicate): {warning}"


def test_the_table_has_a_line_for_the_upscaler(upscaler):
    out = StringIO()
    call_command("check_services", stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 9
    assert lines[-1].split() == [
        "upscaler",
        "(replicate)",
        "nightmareai/real-esrgan",
        "$0.0025",
        "accepted",
        "accepted",
        "-",
    ]
