"""Pictures from the fal queue over real HTTP against the loopback fal fake: submit, poll
the status (queue position shown), fetch the result, download; cancel."""

import json

import pytest
import requests

from generation.providers.base import (
    AuthFailed,
    ConfigError,
    ImageRequest,
    OutOfCredits,
    Rejected,
    StartOver,
    StillRunning,
    Transient,
)
from generation.providers.fal import FalProvider, classify
from tests.conftest import FAL_TEST_KEY

REQUEST = ImageRequest(
    prompt="A fox in the snow", size="1024x1536", seed=7, idempotency_key="studio-7-1"
)


@pytest.fixture
def provider(fal_settings):
    return FalProvider()


def test_it_submits_polls_and_downloads_showing_the_queue_position(fal_settings, fake_fal):
    fal_settings.STUDIO_PROVIDER_TIMEOUT = 10.0
    provider = FalProvider()
    waits, progress = [], []
    request_id = provider.create(REQUEST)
    image = provider.wait(request_id, sleep=waits.append, progress=progress.append)
    assert (image.width, image.height) == (64, 64)
    assert image.request_id == request_id
    assert image.model == "fal-ai/flux/schnell"
    assert progress == [
        "In queue (position 2)",
        "In queue (position 1)",
        "In queue (position 0)",
        "Generating",
    ]
    assert waits == [0.5, 1.0, 2.0, 4.0]
    assert fake_fal.polls[request_id] == 5
    assert fake_fal.submits == 1
    assert fake_fal.no_retry == ["1"]
    [call] = fake_fal.calls
    assert call["model"] == "fal-ai/flux/schnell"
    assert call["body"] == {
        "prompt": "A fox in the snow",
        "image_size": {"width": 1024, "height": 1536},
        "num_images": 1,
        "seed": 7,
        "enable_safety_checker": True,
    }


def test_a_worker_that_takes_the_job_over_builds_the_urls_from_the_id(fal_settings, fake_fal):
    request_id = FalProvider().create(REQUEST)
    other_worker = FalProvider()
    assert other_worker.wait(request_id, sleep=lambda s: None).width == 64
    assert fake_fal.submits == 1


@pytest.mark.parametrize(
    ("reply", "error_class", "status", "setting"),
    [
        ("401", AuthFailed, 401, None),
        ("403_locked", OutOfCredits, 403, None),
        ("404", ConfigError, 404, "STUDIO_FAL_IMAGE_MODEL"),
        ("422_policy", Rejected, 422, None),
        ("422_size", ConfigError, 422, "STUDIO_IMAGE_SIZE"),
        ("500", Transient, 500, None),
        ("504_timeout", Transient, 504, None),
        ("503_runner", Transient, 503, None),
        ("502_html", Transient, 502, None),
    ],
)
def test_submit_failures_are_classified(provider, fake_fal, reply, error_class, status, setting):
    fake_fal.submit_script.append(reply)
    with pytest.raises(error_class) as raised:
        provider.create(REQUEST)
    assert type(raised.value) is error_class
    assert raised.value.http_status == status
    assert getattr(raised.value, "setting", None) == setting
    assert fake_fal.submits == 0


@pytest.mark.parametrize(
    ("result", "error_class", "status", "maybe_paid"),
    [
        ("nsfw", Rejected, 200, True),
        ("no_image", Transient, 200, True),
        ("422_policy", Rejected, 422, False),
        ("504_timeout", Transient, 504, False),
        ("503_runner", Transient, 503, False),
    ],
)
def test_result_failures_are_classified(
    provider, fake_fal, result, error_class, status, maybe_paid
):
    fake_fal.result = result
    request_id = provider.create(REQUEST)
    with pytest.raises(error_class) as raised:
        provider.wait(request_id, sleep=lambda s: None)
    assert type(raised.value) is error_class
    assert raised.value.http_status == status
    assert raised.value.maybe_paid is maybe_paid


def test_the_error_type_header_is_kept_as_the_code(provider, fake_fal):
    fake_fal.submit_script.append("503_runner")
    with pytest.raises(Transient) as raised:
        provider.create(REQUEST)
    assert raised.value.code == "runner_disconnected"


def test_a_request_still_queued_at_the_deadline_is_polled_again_later(fal_settings, fake_fal):
    fal_settings.STUDIO_PROVIDER_TIMEOUT = 0.3
    fake_fal.in_progress_polls = None  # runs until told
    provider = FalProvider()
    request_id = provider.create(REQUEST)
    with pytest.raises(StillRunning) as raised:  # no failure: the job waits, holding no worker
        provider.wait(request_id, sleep=lambda s: None)
    assert raised.value.request_id == request_id
    fake_fal.finish.set()
    assert provider.wait(request_id, sleep=lambda s: None).width == 64
    assert fake_fal.submits == 1


def test_a_request_fal_forgot_starts_over(provider, fake_fal):
    with pytest.raises(StartOver):
        provider.wait("00000000-0000-0000-0000-000000000000", sleep=lambda s: None)


def test_cancel_drops_a_queued_request(provider, fake_fal):
    request_id = provider.create(REQUEST)
    assert provider.cancel(request_id) == "CANCELLATION_REQUESTED"
    assert fake_fal.canceled == [request_id]


def test_cancel_after_completion_says_so(provider, fake_fal):
    request_id = provider.create(REQUEST)
    provider.wait(request_id, sleep=lambda s: None)
    assert provider.cancel(request_id) == "ALREADY_COMPLETED"


def test_a_missing_key_halts_as_auth_without_a_call(fal_settings, fake_fal):
    fal_settings.FAL_KEY = ""
    with pytest.raises(AuthFailed, match="FAL_KEY is not set"):
        FalProvider().create(REQUEST)
    assert fake_fal.call_count == 0


def test_a_refused_key_is_auth_and_never_shown(provider, fake_fal):
    fake_fal.valid_keys = {"other"}
    with pytest.raises(AuthFailed) as raised:
        provider.create(REQUEST)
    assert FAL_TEST_KEY not in raised.value.message
    assert FAL_TEST_KEY not in provider.account


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ({"prompt": "x"}, {"Authorization": "Bearer k"}, 401),
        ({"prompt": "x"}, {}, 401),
        ({"image_size": "square"}, {"Authorization": "Key k"}, 422),
        ({"prompt": "x", "image_size": "huge"}, {"Authorization": "Key k"}, 422),
    ],
)
def test_the_fake_refuses_malformed_submits_like_fal(fake_fal, body, headers, status):
    response = requests.post(
        f"{fake_fal.origin}/fal-ai/flux/schnell", json=body, headers=headers, timeout=5
    )
    assert response.status_code == status
    assert fake_fal.submits == 0


@pytest.mark.parametrize(
    ("status", "body", "headers", "error_class"),
    [
        (403, {"detail": "Forbidden"}, {}, AuthFailed),
        (
            422,
            {"detail": [{"loc": ["body", "num_images"], "msg": "bad", "type": "less_than_equal"}]},
            {},
            ConfigError,
        ),
        (
            422,
            {"detail": [{"loc": ["body", "prompt"], "msg": "too long", "type": "string_too_long"}]},
            {},
            Rejected,
        ),
        (400, {"detail": "Request is still in progress"}, {}, Rejected),
        (504, {"detail": "Startup timed out"}, {"x-fal-error-type": "startup_timeout"}, Transient),
    ],
)
def test_recorded_bodies_classify(status, body, headers, error_class):
    assert type(classify(status, headers, json.dumps(body).encode())) is error_class
