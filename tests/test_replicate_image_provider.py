"""Pictures from Replicate over real HTTP against the loopback predictions fake: create
(with Prefer: wait), then wait, in the asynchronous shape the engine stores ids with."""

import pytest

from generation.providers.base import (
    AuthFailed,
    ConfigError,
    ImageRequest,
    OutOfCredits,
    RateLimited,
    Rejected,
    StartOver,
    StillRunning,
    Transient,
)
from generation.providers.replicate_image import ReplicateImageProvider, classify

REQUEST = ImageRequest(
    prompt="A fox in the snow", size="1536x1024", seed=7, idempotency_key="studio-7-1"
)


@pytest.fixture
def provider(replicate_image_settings):
    return ReplicateImageProvider()


def no_sleep(seconds):
    pass


def test_a_prediction_finished_within_prefer_wait_costs_no_poll(provider, fake_predictions):
    fake_predictions.polls_needed = 0
    prediction_id = provider.create(REQUEST)
    image = provider.wait(prediction_id, sleep=no_sleep)
    assert (image.width, image.height) == (64, 64)
    assert image.request_id == prediction_id
    assert image.model == "black-forest-labs/flux-schnell"
    assert fake_predictions.creates == 1
    assert sum(fake_predictions.polls.values()) == 0
    assert fake_predictions.prefer == ["wait=1"]
    assert fake_predictions.idempotency_keys == ["studio-7-1"]


def test_it_sends_the_model_inputs(provider, fake_predictions):
    fake_predictions.polls_needed = 0
    provider.wait(provider.create(REQUEST), sleep=no_sleep)
    assert fake_predictions.inputs == [
        {
            "prompt": "A fox in the snow",
            "aspect_ratio": "3:2",
            "num_outputs": 1,
            "output_format": "png",
            "seed": 7,
        }
    ]


def test_an_unfinished_prediction_is_polled_with_injected_waits(
    replicate_image_settings, fake_predictions
):
    replicate_image_settings.STUDIO_PROVIDER_TIMEOUT = 10.0
    provider = ReplicateImageProvider()
    fake_predictions.polls_needed = 3
    waits = []
    progress = []
    prediction_id = provider.create(REQUEST)
    image = provider.wait(prediction_id, sleep=waits.append, progress=progress.append)
    assert image.width == 64
    assert fake_predictions.polls[prediction_id] == 4
    assert waits == [0.5, 1.0, 2.0]
    assert progress == ["Starting", "Generating", "Generating"]


def test_a_flagged_prediction_is_rejected(provider, fake_predictions):
    fake_predictions.polls_needed = 0
    fake_predictions.outcome = "flagged"
    prediction_id = provider.create(REQUEST)
    with pytest.raises(Rejected) as raised:
        provider.wait(prediction_id, sleep=no_sleep)
    assert type(raised.value) is Rejected
    assert raised.value.code == "E005"
    assert "flagged as sensitive" in raised.value.message


def test_another_failure_starts_over_with_a_new_prediction(provider, fake_predictions):
    fake_predictions.polls_needed = 1
    fake_predictions.outcome = "failed"
    prediction_id = provider.create(REQUEST)
    with pytest.raises(StartOver) as raised:
        provider.wait(prediction_id, sleep=no_sleep)
    assert raised.value.message == "Replicate's prediction failed: CUDA out of memory"


def test_a_prediction_still_running_at_the_deadline_is_polled_again_later(
    replicate_image_settings, fake_predictions
):
    replicate_image_settings.STUDIO_PROVIDER_TIMEOUT = 0.3
    fake_predictions.polls_needed = None  # runs until told
    provider = ReplicateImageProvider()
    prediction_id = provider.create(REQUEST)
    with pytest.raises(StillRunning) as raised:  # not StartOver: the same prediction goes on
        provider.wait(prediction_id, sleep=no_sleep)
    assert raised.value.request_id == prediction_id
    fake_predictions.finish.set()
    assert provider.wait(prediction_id, sleep=no_sleep).width == 64
    assert fake_predictions.creates == 1


def test_a_prediction_the_service_forgot_starts_over(provider, fake_predictions):
    with pytest.raises(StartOver):
        provider.wait("no-such-prediction", sleep=no_sleep)


def test_an_expired_output_starts_over_and_may_have_been_paid(provider, fake_predictions):
    fake_predictions.polls_needed = 0
    fake_predictions.files_expired = True
    prediction_id = provider.create(REQUEST)
    with pytest.raises(StartOver) as raised:
        provider.wait(prediction_id, sleep=no_sleep)
    assert raised.value.maybe_paid is True


def test_cancel_stops_the_prediction(provider, fake_predictions):
    fake_predictions.polls_needed = None
    prediction_id = provider.create(REQUEST)
    assert provider.cancel(prediction_id) == "canceled"
    assert fake_predictions.canceled == [prediction_id]


@pytest.mark.parametrize(
    ("reply", "error_class", "status"),
    [
        ("402", OutOfCredits, 402),
        ("429", RateLimited, 429),
        ("401", AuthFailed, 401),
        ("503", Transient, 503),
    ],
)
def test_create_failures_are_classified(provider, fake_predictions, reply, error_class, status):
    fake_predictions.create_script.append(reply)
    with pytest.raises(error_class) as raised:
        provider.create(REQUEST)
    assert type(raised.value) is error_class
    assert raised.value.http_status == status
    assert fake_predictions.creates == 0


def test_a_throttled_create_waits_the_seconds_it_names(provider, fake_predictions):
    fake_predictions.create_script.append("429")
    with pytest.raises(RateLimited) as raised:
        provider.create(REQUEST)
    assert raised.value.retry_after == 30.0


def test_a_model_replicate_does_not_know_is_config(replicate_image_settings, fake_predictions):
    replicate_image_settings.STUDIO_REPLICATE_IMAGE_MODEL = "black-forest-labs/flux-schnel"
    with pytest.raises(ConfigError) as raised:
        ReplicateImageProvider().create(REQUEST)
    assert raised.value.setting == "STUDIO_REPLICATE_IMAGE_MODEL"
    assert raised.value.http_status == 404


def test_a_missing_token_halts_as_auth_without_a_call(replicate_image_settings, fake_predictions):
    replicate_image_settings.REPLICATE_API_TOKEN = ""
    with pytest.raises(AuthFailed, match="REPLICATE_API_TOKEN is not set"):
        ReplicateImageProvider().create(REQUEST)
    assert fake_predictions.creates == 0


def test_a_refused_token_is_auth_and_never_shown(provider, fake_predictions):
    fake_predictions.valid_tokens = {"r8_other"}
    with pytest.raises(AuthFailed) as raised:
        provider.create(REQUEST)
    assert "r8_test_token" not in raised.value.message


@pytest.mark.parametrize(
    ("status", "body", "error_class", "setting"),
    [
        (
            422,
            {
                "title": "Input validation failed",
                "detail": "- input.aspect_ratio: aspect_ratio must be one of the following",
                "status": 422,
                "invalid_fields": [{"type": "enum", "field": "input.aspect_ratio"}],
            },
            ConfigError,
            "STUDIO_IMAGE_SIZE",
        ),
        (
            422,
            {"title": "Input validation failed", "detail": "- input: prompt is required"},
            Rejected,
            None,
        ),
        (
            422,
            {"title": "Input validation failed", "detail": "- input.num_outputs: Must be <= 1"},
            ConfigError,
            "STUDIO_REPLICATE_IMAGE_MODEL",
        ),
        (502, "<html><body>Bad gateway</body></html>", Transient, None),
        (
            404,
            {"title": "Not found", "detail": "Not found."},
            ConfigError,
            "STUDIO_REPLICATE_IMAGE_MODEL",
        ),
    ],
)
def test_recorded_problems_classify(status, body, error_class, setting):
    import json

    raw = json.dumps(body).encode() if isinstance(body, dict) else body.encode()
    error = classify(status, {}, raw)
    assert type(error) is error_class
    assert getattr(error, "setting", None) == setting


def test_the_fake_refuses_malformed_creates_like_the_service(fake_predictions):
    import requests

    url = f"{fake_predictions.url}/models/black-forest-labs/flux-schnell/predictions"
    assert requests.post(url, json={"input": {"prompt": "x"}}, timeout=5).status_code == 401
    token = {"Authorization": "Bearer r8_x"}
    assert requests.post(url, json={"prompt": "x"}, headers=token, timeout=5).status_code == 422
    assert requests.post(url, json={"input": {}}, headers=token, timeout=5).status_code == 422
    bad_ratio = {"input": {"prompt": "x", "aspect_ratio": "7:3"}}
    response = requests.post(url, json=bad_ratio, headers=token, timeout=5)
    assert response.status_code == 422
    assert response.json()["invalid_fields"][0]["field"] == "input.aspect_ratio"
    assert fake_predictions.creates == 0
