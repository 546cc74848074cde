"""The Gemini provider over real HTTP against the loopback Gemini fake."""

import json

import pytest

from generation.providers.base import (
    AuthFailed,
    ConfigError,
    ImageRequest,
    OutOfCredits,
    RateLimited,
    Rejected,
    Transient,
)
from generation.providers.gemini import GeminiProvider, aspect_ratio, classify
from tests.conftest import GEMINI_TEST_KEY

REQUEST = ImageRequest(
    prompt="A fox in the snow", size="1024x1024", seed=1, idempotency_key="studio-7-1"
)


@pytest.fixture
def provider(gemini_settings):
    return GeminiProvider()


def test_it_sends_the_wire_format_and_returns_the_inline_image(provider, fake_gemini):
    image = provider.generate(REQUEST)
    assert (image.width, image.height) == (64, 64)
    assert image.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert image.model == "gemini-3.1-flash-image"
    assert len(image.request_id) == 22
    assert image.http_status == 200
    assert image.usage["candidatesTokenCount"] == 1290
    assert image.reported_cost is None
    [call] = fake_gemini.calls
    assert call["model"] == "gemini-3.1-flash-image"
    assert call["key"] == GEMINI_TEST_KEY
    assert call["body"] == {
        "contents": [{"role": "user", "parts": [{"text": "A fox in the snow"}]}],
        "generationConfig": {
            "responseModalities": ["IMAGE"],
            "imageConfig": {"aspectRatio": "1:1"},
        },
    }


@pytest.mark.parametrize(
    ("size", "ratio"),
    [
        ("1024x1024", "1:1"),
        ("1536x1024", "3:2"),
        ("1024x1536", "2:3"),
        ("1792x1024", "16:9"),
        ("1024x1792", "9:16"),
        ("1280x1024", "5:4"),
        ("2100x900", "21:9"),
        ("1000x760", "4:3"),
    ],
)
def test_the_size_becomes_the_nearest_supported_aspect_ratio(size, ratio):
    assert aspect_ratio(size) == ratio


def test_a_wide_page_asks_for_a_wide_picture(provider, fake_gemini):
    provider.generate(
        ImageRequest(prompt="A long meadow", size="1792x1024", seed=1, idempotency_key="k")
    )
    assert fake_gemini.calls[0]["body"]["generationConfig"]["imageConfig"] == {
        "aspectRatio": "16:9"
    }


@pytest.mark.parametrize("reply", ["ok_text_then_image", "ok_second_candidate"])
def test_the_image_is_found_in_any_part_of_any_candidate(provider, fake_gemini, reply):
    fake_gemini.default = reply
    assert provider.generate(REQUEST).width == 64


@pytest.mark.parametrize(
    ("reply", "code", "message"),
    [
        ("blocked_safety", "SAFETY", "Gemini blocked the prompt (SAFETY)."),
        (
            "blocked_prohibited",
            "PROHIBITED_CONTENT",
            "Gemini blocked the prompt (PROHIBITED_CONTENT).",
        ),
        ("blocked_other", "OTHER", "Gemini blocked the prompt (OTHER)."),
        ("finish_image_safety", "IMAGE_SAFETY", "Gemini made no picture (IMAGE_SAFETY)."),
        ("finish_prohibited", "PROHIBITED_CONTENT", "Gemini made no picture (PROHIBITED_CONTENT)."),
        (
            "finish_image_prohibited",
            "IMAGE_PROHIBITED_CONTENT",
            "Gemini made no picture (IMAGE_PROHIBITED_CONTENT).",
        ),
        ("finish_safety", "SAFETY", "Gemini made no picture (SAFETY)."),
        ("finish_no_image", "NO_IMAGE", "Gemini made no picture (NO_IMAGE)."),
        ("finish_other", "OTHER", "Gemini made no picture (OTHER)."),
        (
            "text_only",
            "TEXT_ONLY",
            "Gemini answered with text and no picture. It said: \"I can't create images of "
            'that. Can I help with something else?"',
        ),
    ],
)
def test_a_200_refusal_is_rejected_with_its_reason(provider, fake_gemini, reply, code, message):
    fake_gemini.default = reply
    with pytest.raises(Rejected) as raised:
        provider.generate(REQUEST)
    assert type(raised.value) is Rejected
    assert raised.value.message == message
    assert raised.value.code == code
    assert raised.value.http_status == 200
    assert fake_gemini.call_count == 1


@pytest.mark.parametrize(
    ("reply", "error_class", "status", "setting", "maybe_paid"),
    [
        ("429_rate", RateLimited, 429, None, False),
        ("429_quota_zero", ConfigError, 429, "GEMINI_IMAGE_MODEL", False),
        ("402", OutOfCredits, 402, None, False),
        ("400_precondition", ConfigError, 400, "GEMINI_API_KEY", False),
        ("400_key_invalid", AuthFailed, 400, None, False),
        ("403_denied", AuthFailed, 403, None, False),
        ("404_model", ConfigError, 404, "GEMINI_IMAGE_MODEL", False),
        ("500", Transient, 500, None, False),
        ("503", Transient, 503, None, False),
        ("504", Transient, 504, None, False),
        ("502_html", Transient, 502, None, False),
        ("empty", Transient, 200, None, False),
        ("broken_json", Transient, 200, None, True),
        ("bad_b64", Transient, 200, None, True),
        ("not_image", Transient, 200, None, True),
    ],
)
def test_it_classifies_every_failure(
    provider, fake_gemini, reply, error_class, status, setting, maybe_paid
):
    fake_gemini.default = reply
    with pytest.raises(error_class) as raised:
        provider.generate(REQUEST)
    assert type(raised.value) is error_class
    assert raised.value.http_status == status
    assert getattr(raised.value, "setting", None) == setting
    assert raised.value.maybe_paid is maybe_paid


def test_a_rate_limit_waits_for_the_retry_delay(provider, fake_gemini):
    fake_gemini.default = "429_rate"
    with pytest.raises(RateLimited) as raised:
        provider.generate(REQUEST)
    assert raised.value.retry_after == 22.0
    assert raised.value.code == "RESOURCE_EXHAUSTED"


def test_a_key_the_service_does_not_know_is_auth_and_never_shown(provider, fake_gemini):
    fake_gemini.valid_keys = {"another-key"}
    with pytest.raises(AuthFailed) as raised:
        provider.generate(REQUEST)
    assert raised.value.message == "API key not valid. Please pass a valid API key."
    assert GEMINI_TEST_KEY not in str(raised.value)


def test_a_model_the_service_does_not_know_is_config(gemini_settings, fake_gemini):
    gemini_settings.GEMINI_IMAGE_MODEL = "gemini-2.5-flash-imag"
    with pytest.raises(ConfigError) as raised:
        GeminiProvider().generate(REQUEST)
    assert raised.value.setting == "GEMINI_IMAGE_MODEL"
    assert "models/gemini-2.5-flash-imag is not found" in raised.value.message


def test_a_wrong_base_url_is_config(gemini_settings, fake_gemini):
    gemini_settings.GEMINI_BASE_URL = fake_gemini.origin + "/v1"
    with pytest.raises(ConfigError) as raised:
        GeminiProvider().generate(REQUEST)
    assert raised.value.setting == "GEMINI_BASE_URL"


def test_a_missing_key_halts_as_auth_without_a_call(gemini_settings, fake_gemini):
    gemini_settings.GEMINI_API_KEY = ""
    with pytest.raises(AuthFailed, match="GEMINI_API_KEY is not set"):
        GeminiProvider().generate(REQUEST)
    assert fake_gemini.call_count == 0


def test_a_held_answer_past_the_deadline_is_transient(gemini_settings, fake_gemini):
    gemini_settings.STUDIO_PROVIDER_TIMEOUT = 0.3
    fake_gemini.hold()
    try:
        with pytest.raises(Transient, match="did not answer in time"):
            GeminiProvider().generate(REQUEST)
    finally:
        fake_gemini.release()


def test_the_account_names_endpoint_and_key_fingerprint_not_the_key(provider, fake_gemini):
    assert provider.account.startswith(f"gemini|{fake_gemini.url}|")
    assert GEMINI_TEST_KEY not in provider.account


# --- the fake is as strict as the service --------------------------------------------


def _post(fake, body, headers):
    import requests

    return requests.post(
        f"{fake.url}/models/gemini-2.5-flash-image:generateContent",
        data=body,
        headers=headers,
        timeout=5,
    )


@pytest.mark.parametrize(
    ("body", "headers", "status", "state"),
    [
        (
            b'{"contents": [{"parts": [{"text": "x"}]}]}',
            {"Content-Type": "application/json"},
            403,
            "PERMISSION_DENIED",
        ),
        (
            b"prompt=x",
            {"x-goog-api-key": "k", "Content-Type": "text/plain"},
            400,
            "INVALID_ARGUMENT",
        ),
        (
            b"{}",
            {"x-goog-api-key": "k", "Content-Type": "application/json"},
            400,
            "INVALID_ARGUMENT",
        ),
        (
            json.dumps({"contents": [{"parts": [{"text": "x"}]}], "prompt": "x"}).encode(),
            {"x-goog-api-key": "k", "Content-Type": "application/json"},
            400,
            "INVALID_ARGUMENT",
        ),
        (
            json.dumps(
                {
                    "contents": [{"parts": [{"text": "x"}]}],
                    "generationConfig": {"imageConfig": {"aspectRatio": "7:3"}},
                }
            ).encode(),
            {"x-goog-api-key": "k", "Content-Type": "application/json"},
            400,
            "INVALID_ARGUMENT",
        ),
    ],
)
def test_the_fake_refuses_malformed_requests_like_the_service(
    fake_gemini, body, headers, status, state
):
    response = _post(fake_gemini, body, headers)
    assert response.status_code == status
    assert response.json()["error"]["status"] == state


@pytest.mark.parametrize(
    ("status", "body", "error_class"),
    [
        (
            429,
            {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "m"}},
            RateLimited,
        ),
        (500, None, Transient),
        (403, "<html><body>Forbidden by proxy</body></html>", Transient),
        (401, {"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "m"}}, AuthFailed),
        (
            400,
            {
                "error": {
                    "code": 400,
                    "status": "INVALID_ARGUMENT",
                    "message": "Request contains an invalid argument.",
                }
            },
            Rejected,
        ),
    ],
)
def test_recorded_bodies_classify(status, body, error_class):
    raw = json.dumps(body).encode() if isinstance(body, dict) else (body or "").encode()
    assert type(classify(status, {}, raw)) is error_class
