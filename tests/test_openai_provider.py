"""The OpenAI-compatible provider over real HTTP against the loopback fake service."""

import re

import pytest

from generation import services
from generation.models import GenerationAttempt
from generation.providers.base import (
    AuthFailed,
    ConfigError,
    ImageRequest,
    OutOfCredits,
    RateLimited,
    Rejected,
    Transient,
)
from generation.providers.openai import OpenAIProvider, classify
from tests.conftest import TEST_API_KEY

REQUEST = ImageRequest(
    prompt="A fox in the snow",
    size="1024x1024",
    seed=1,
    idempotency_key="studio-illustration-7-attempt-1",
)


@pytest.fixture
def provider(openai_settings):
    return OpenAIProvider()


def test_it_sends_the_wire_format_and_returns_verified_image_bytes(provider, fake_openai):
    image = provider.generate(REQUEST)
    assert (image.width, image.height) == (64, 64)
    assert image.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert image.request_id.startswith("req_")
    [call] = fake_openai.calls
    assert call["body"] == {
        "model": "gpt-image-1",
        "prompt": "A fox in the snow",
        "size": "1024x1024",
        "n": 1,
    }
    assert call["authorization"] == f"Bearer {TEST_API_KEY}"
    assert call["idempotency_key"] == "studio-illustration-7-attempt-1"


def test_dall_e_models_ask_for_b64_json(openai_settings, fake_openai):
    openai_settings.STUDIO_IMAGE_MODEL = "dall-e-3"
    OpenAIProvider().generate(REQUEST)
    assert fake_openai.calls[0]["body"]["response_format"] == "b64_json"


def test_it_downloads_an_image_given_by_url(provider, fake_openai):
    fake_openai.default = "ok_url"
    assert provider.generate(REQUEST).width == 64


@pytest.mark.parametrize(
    ("reply", "error_class", "status", "code"),
    [
        ("402", OutOfCredits, 402, "billing_error"),
        ("429_quota", OutOfCredits, 429, "insufficient_quota"),
        ("400_billing", OutOfCredits, 400, "billing_hard_limit_reached"),
        ("401", AuthFailed, 401, "invalid_api_key"),
        ("403", ConfigError, 403, "unsupported_country_region_territory"),
        ("429_rate", RateLimited, 429, "rate_limit_exceeded"),
        ("400_policy", Rejected, 400, "content_policy_violation"),
        ("400_moderation", Rejected, 400, "moderation_blocked"),
        ("500", Transient, 500, "server_error"),
        ("503", Transient, 503, "server_is_overloaded"),
    ],
)
def test_it_classifies_errors_by_status_and_code(
    provider, fake_openai, reply, error_class, status, code
):
    fake_openai.default = reply
    with pytest.raises(error_class) as raised:
        provider.generate(REQUEST)
    assert type(raised.value) is error_class
    assert raised.value.http_status == status
    assert raised.value.code == code
    assert raised.value.request_id.startswith("req_")


def test_a_rate_limit_carries_its_retry_after(provider, fake_openai):
    fake_openai.default = "429_rate"
    with pytest.raises(RateLimited) as raised:
        provider.generate(REQUEST)
    assert raised.value.retry_after == 3.0


@pytest.mark.parametrize("reply", ["broken_json", "bad_b64", "not_image"])
def test_broken_answers_are_transient(provider, fake_openai, reply):
    fake_openai.default = reply
    with pytest.raises(Transient) as raised:
        provider.generate(REQUEST)
    assert type(raised.value) is Transient


def test_a_picture_that_cannot_be_read_is_transient_with_its_status_and_request_id(
    provider, fake_openai
):
    fake_openai.default = "not_image"
    with pytest.raises(Transient) as raised:
        provider.generate(REQUEST)
    assert raised.value.http_status == 200
    assert re.fullmatch(r"req_[0-9a-f]{12}", raised.value.request_id)
    assert raised.value.maybe_paid is True


@pytest.mark.django_db
def test_the_attempt_of_a_picture_that_cannot_be_read_records_status_and_request_id(
    make_project, openai_settings, fake_openai, drain
):
    project = make_project(pages=1)
    fake_openai.script.append("not_image")
    run = services.generate_missing(project=project).run
    drain(run.pk, limit=1)
    first, second = GenerationAttempt.objects.order_by("number")
    assert (first.outcome, first.http_status) == ("transient", 200)
    assert "not a valid image" in first.message
    assert re.fullmatch(r"req_[0-9a-f]{12}", first.provider_request_id)
    assert (second.outcome, second.http_status) == ("success", 200)
    assert first.provider_request_id != second.provider_request_id


def test_a_hang_past_the_read_timeout_is_transient(openai_settings, fake_openai):
    openai_settings.STUDIO_PROVIDER_TIMEOUT = 0.3
    fake_openai.default = "hang"
    with pytest.raises(Transient, match="did not answer in time"):
        OpenAIProvider().generate(REQUEST)


def test_an_unreachable_service_is_transient(openai_settings):
    openai_settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"
    with pytest.raises(Transient, match="Could not reach"):
        OpenAIProvider().generate(REQUEST)


def test_a_missing_key_halts_as_auth(openai_settings):
    openai_settings.OPENAI_API_KEY = ""
    with pytest.raises(AuthFailed):
        OpenAIProvider().generate(REQUEST)


@pytest.mark.parametrize(
    ("status", "body", "headers", "error_class"),
    [
        (
            429,
            {
                "error": {
                    "message": "m",
                    "type": "insufficient_quota",
                    "param": None,
                    "code": "organization_spend_limit_exceeded",
                }
            },
            {},
            OutOfCredits,
        ),
        (
            429,
            {
                "error": {
                    "message": "m",
                    "type": "x",
                    "param": None,
                    "code": "project_usage_limit_exceeded",
                }
            },
            {},
            OutOfCredits,
        ),
        (
            429,
            {
                "error": {
                    "message": "m",
                    "type": "x",
                    "param": None,
                    "code": "credit_balance_exhausted",
                }
            },
            {},
            OutOfCredits,
        ),
        (408, None, {}, Transient),
        (502, None, {}, Transient),
        (504, "<html>gateway</html>", {}, Transient),
        (
            404,
            {
                "error": {
                    "message": "no such model",
                    "type": "invalid_request_error",
                    "param": "model",
                    "code": "model_not_found",
                }
            },
            {},
            ConfigError,
        ),
    ],
)
def test_recorded_bodies_classify(status, body, headers, error_class):
    assert type(classify(status, body, headers)) is error_class


def test_retry_after_ms_wins_over_retry_after():
    error = classify(429, None, {"retry-after-ms": "1500", "retry-after": "9"})
    assert error.retry_after == 1.5
