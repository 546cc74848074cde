"""The OpenAI-compatible chat image provider (OpenRouter, Lovable) over real HTTP against
the loopback gateway fake."""

import json
from decimal import Decimal

import pytest
import requests

from generation.providers.base import (
    AuthFailed,
    ConfigError,
    ImageRequest,
    OutOfCredits,
    RateLimited,
    Rejected,
    Transient,
)
from generation.providers.openai_chat import ChatImageProvider, classify
from tests.conftest import CHAT_TEST_KEY

REQUEST = ImageRequest(
    prompt="A fox in the snow", size="1024x1024", seed=1, idempotency_key="studio-7-1"
)


@pytest.fixture
def provider(chat_image_settings):
    return ChatImageProvider()


def test_it_sends_the_wire_format_and_returns_the_image_and_its_reported_cost(
    provider, fake_chat_images
):
    image = provider.generate(REQUEST)
    assert (image.width, image.height) == (64, 64)
    assert image.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert image.model == "google/gemini-3.1-flash-image"
    assert image.request_id.startswith("gen-")
    assert image.reported_cost == Decimal("0.0387")
    assert image.usage["completion_tokens"] == 1290
    [call] = fake_chat_images.calls
    assert call["authorization"] == f"Bearer {CHAT_TEST_KEY}"
    assert call["body"] == {
        "model": "google/gemini-3.1-flash-image",
        "messages": [{"role": "user", "content": "A fox in the snow"}],
        "modalities": ["image", "text"],
    }


def test_a_wide_page_sends_its_aspect_ratio(provider, fake_chat_images):
    provider.generate(
        ImageRequest(prompt="A meadow", size="1536x1024", seed=1, idempotency_key="k")
    )
    assert fake_chat_images.calls[0]["body"]["image_config"] == {"aspect_ratio": "3:2"}


def test_without_a_reported_cost_the_price_list_decides(provider, fake_chat_images):
    fake_chat_images.default = "ok_no_cost"
    assert provider.generate(REQUEST).reported_cost is None


def test_an_image_given_by_url_is_downloaded(provider, fake_chat_images):
    fake_chat_images.default = "ok_url"
    assert provider.generate(REQUEST).width == 64


@pytest.mark.parametrize(
    ("reply", "error_class", "status", "maybe_paid"),
    [
        ("402", OutOfCredits, 402, False),
        ("402_lovable", OutOfCredits, 402, False),
        ("429_quota_rewritten", OutOfCredits, 429, False),
        ("401", AuthFailed, 401, False),
        ("403_moderation", Rejected, 403, False),
        ("404_modalities", ConfigError, 404, False),
        ("429", RateLimited, 429, False),
        ("500", Transient, 500, False),
        ("502", Transient, 502, False),
        ("503", Transient, 503, False),
        ("502_html", Transient, 502, False),
        ("200_error_moderation", Rejected, 200, False),
        ("200_error_credits", OutOfCredits, 200, False),
        ("200_error_other", Transient, 200, False),
        ("200_choice_error", Transient, 200, False),
        ("200_content_filter", Rejected, 200, False),
        ("200_no_image", Transient, 200, False),
        ("broken_json", Transient, 200, True),
        ("bad_data_url", Transient, 200, True),
        ("not_image", Transient, 200, True),
        ("url_gone", Transient, 404, True),
    ],
)
def test_it_classifies_every_failure(
    provider, fake_chat_images, reply, error_class, status, maybe_paid
):
    fake_chat_images.default = reply
    with pytest.raises(error_class) as raised:
        provider.generate(REQUEST)
    assert type(raised.value) is error_class
    assert raised.value.http_status == status
    assert raised.value.maybe_paid is maybe_paid
    assert fake_chat_images.call_count == 1


def test_a_rate_limit_carries_its_retry_after(provider, fake_chat_images):
    fake_chat_images.default = "429"
    with pytest.raises(RateLimited) as raised:
        provider.generate(REQUEST)
    assert raised.value.retry_after == 7.0


def test_a_content_filter_shows_its_reason(provider, fake_chat_images):
    fake_chat_images.default = "200_content_filter"
    with pytest.raises(Rejected) as raised:
        provider.generate(REQUEST)
    assert raised.value.message == "The gateway refused this prompt (IMAGE_SAFETY)."


def test_text_without_an_image_is_shown(provider, fake_chat_images):
    fake_chat_images.default = "200_no_image"
    with pytest.raises(Transient) as raised:
        provider.generate(REQUEST)
    assert raised.value.message == (
        "The image service (chat gateway) answered without an image (finish_reason stop). "
        'It said: "Here is a description of a fox in the snow."'
    )


def test_no_modalities_no_picture_the_fake_answers_like_the_model(fake_chat_images):
    response = requests.post(
        f"{fake_chat_images.url}/chat/completions",
        json={
            "model": "google/gemini-2.5-flash-image",
            "messages": [{"role": "user", "content": "x"}],
        },
        headers={"Authorization": "Bearer k"},
        timeout=5,
    )
    message = response.json()["choices"][0]["message"]
    assert response.status_code == 200
    assert "images" not in message


def test_a_model_the_gateway_does_not_know_is_config(chat_image_settings, fake_chat_images):
    chat_image_settings.STUDIO_CHAT_IMAGE_MODEL = "google/gemini-2.5-flash-imag"
    with pytest.raises(ConfigError) as raised:
        ChatImageProvider().generate(REQUEST)
    assert raised.value.setting == "STUDIO_CHAT_IMAGE_MODEL"
    assert raised.value.message == "google/gemini-2.5-flash-imag is not a valid model ID"


def test_a_wrong_base_url_is_config(chat_image_settings, fake_chat_images):
    chat_image_settings.STUDIO_CHAT_IMAGE_BASE_URL = fake_chat_images.origin + "/v1"
    with pytest.raises(ConfigError) as raised:
        ChatImageProvider().generate(REQUEST)
    assert raised.value.setting == "STUDIO_CHAT_IMAGE_BASE_URL"


def test_a_refused_key_is_auth_and_never_shown(provider, fake_chat_images):
    fake_chat_images.valid_keys = {"sk-or-v1-other"}
    with pytest.raises(AuthFailed) as raised:
        provider.generate(REQUEST)
    assert raised.value.message == "User not found."
    assert CHAT_TEST_KEY not in provider.account


def test_a_missing_key_halts_as_auth_without_a_call(chat_image_settings, fake_chat_images):
    chat_image_settings.STUDIO_CHAT_IMAGE_API_KEY = ""
    with pytest.raises(AuthFailed, match="STUDIO_CHAT_IMAGE_API_KEY is not set"):
        ChatImageProvider().generate(REQUEST)
    assert fake_chat_images.call_count == 0


def test_a_held_answer_past_the_deadline_is_transient(chat_image_settings, fake_chat_images):
    chat_image_settings.STUDIO_PROVIDER_TIMEOUT = 0.3
    fake_chat_images.hold()
    try:
        with pytest.raises(Transient, match="did not answer in time"):
            ChatImageProvider().generate(REQUEST)
    finally:
        fake_chat_images.release()


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (
            {
                "model": "google/gemini-2.5-flash-image",
                "messages": [{"role": "user", "content": "x"}],
            },
            {},
            401,
            "No auth credentials found",
        ),
        (
            {"model": "google/gemini-2.5-flash-image"},
            {"Authorization": "Bearer k"},
            400,
            'Input required: specify "messages"',
        ),
        (
            {"messages": [{"role": "user", "content": "x"}]},
            {"Authorization": "Bearer k"},
            400,
            "No models provided",
        ),
    ],
)
def test_the_fake_refuses_malformed_requests_like_the_gateway(
    fake_chat_images, body, headers, status, message
):
    response = requests.post(
        f"{fake_chat_images.url}/chat/completions", json=body, headers=headers, timeout=5
    )
    assert response.status_code == status
    assert response.json()["error"]["message"] == message


def test_the_fake_refuses_a_body_that_is_not_json(fake_chat_images):
    response = requests.post(
        f"{fake_chat_images.url}/chat/completions",
        data="model=x",
        headers={"Authorization": "Bearer k", "Content-Type": "application/x-www-form-urlencoded"},
        timeout=5,
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("status", "body", "error_class"),
    [
        (403, {"error": {"code": 403, "message": "Key limit exceeded"}}, OutOfCredits),
        (403, {"error": {"code": 403, "message": "Forbidden"}}, AuthFailed),
        (403, "<html>denied by proxy</html>", Transient),
        (408, {"error": {"code": 408, "message": "Request timed out"}}, Transient),
        (400, {"error": {"code": 400, "message": "Prompt too long"}}, Rejected),
        (
            500,
            {"error": {"code": 500, "message": "AI gateway error"}},
            Transient,
        ),
    ],
)
def test_recorded_bodies_classify(status, body, error_class):
    raw = json.dumps(body).encode() if isinstance(body, dict) else body.encode()
    assert type(classify(status, {}, raw)) is error_class
