"""gpt-image-2, OpenAI's default: any size in multiples of 16 up to a 3,840 px edge (checked
before a call), up to 16 reference pictures through /images/edits, priced from the usage its
answer reports. Real HTTP against the loopback fake, which takes and refuses sizes as the
service does."""

import io
from decimal import Decimal

import pytest
import requests
from PIL import Image

from generation import services
from generation.models import GenerationAttempt, Run, SpendEntry
from generation.pricing import charged
from generation.providers.base import ConfigError, ImageRequest, Reference
from generation.providers.openai import OpenAIProvider, classify
from tests.conftest import TEST_API_KEY


def picture(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (120, 90), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def request(size="1024x1024", references=()) -> ImageRequest:
    return ImageRequest(
        prompt="Peter squeezes under the gate",
        size=size,
        seed=1,
        idempotency_key="studio-illustration-7-1",
        references=tuple(references),
    )


@pytest.fixture
def gpt_image_2(openai_settings):
    openai_settings.STUDIO_IMAGE_MODEL = "gpt-image-2"
    return openai_settings


def test_it_draws_at_a_print_size_and_is_charged_from_its_usage(gpt_image_2, fake_openai):
    image = OpenAIProvider().generate(request("2048x1152"))
    [call] = fake_openai.calls
    assert call["body"] == {
        "model": "gpt-image-2",
        "prompt": "Peter squeezes under the gate",
        "size": "2048x1152",
        "n": 1,
    }
    # 2.25 times a 1024x1024 picture's 1,056 output tokens.
    assert image.usage["output_tokens"] == 2376
    # $5 a million text tokens in, $30 a million out.
    assert charged("openai", "gpt-image-2", "2048x1152", image) == (Decimal("0.0715"), "usage")


def test_a_size_it_does_not_take_is_refused_before_any_call(gpt_image_2, fake_openai):
    with pytest.raises(ConfigError) as refused:
        OpenAIProvider().generate(request("1000x1000"))
    assert refused.value.message == (
        "gpt-image-2 takes 1000x1000 only with both sides a multiple of 16."
    )
    assert (refused.value.setting, refused.value.sent) == ("STUDIO_IMAGE_SIZE", False)
    assert fake_openai.calls == []


@pytest.mark.parametrize(
    ("size", "says"),
    [
        ("1000x1000", "Width and height must both be multiples of 16."),
        ("4096x2304", "The longest edge must be at most 3840 pixels."),
        ("3840x1024", "The aspect ratio must be at most 3:1."),
        ("512x512", "The total number of pixels must be between 655360 and 8294400."),
    ],
)
def test_the_fake_refuses_those_sizes_as_the_service_does(fake_openai, size, says):
    response = requests.post(
        f"{fake_openai.url}/images/generations",
        json={"model": "gpt-image-2", "prompt": "A fox", "size": size},
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        timeout=5,
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["message"] == f"Invalid size '{size}'. {says}"
    assert (body["error"]["param"], body["error"]["code"]) == ("size", "invalid_value")
    # And what the studio makes of such an answer: the size setting, halted once.
    error = classify(400, body, response.headers)
    assert isinstance(error, ConfigError) and error.setting == "STUDIO_IMAGE_SIZE"
    assert fake_openai.successes == 0


def test_sixteen_references_go_through_edits_in_order(gpt_image_2, fake_openai):
    colours = [(15 * n, 200 - 10 * n, 90) for n in range(17)]
    references = [
        Reference(f"Friend {n}", f"friend {n}", picture(c)) for n, c in enumerate(colours)
    ]
    image = OpenAIProvider().generate(request("1536x1024", references))
    [call] = fake_openai.calls
    assert call["path"] == "/v1/images/edits"
    assert len(call["images"]) == 16  # the most the edits endpoint takes; the 17th stays home
    assert [Image.open(io.BytesIO(part["bytes"])).getpixel((0, 0)) for part in call["images"]] == [
        tuple(colour) for colour in colours[:16]
    ]
    assert "input_fidelity" not in call["body"]  # gpt-image-2 always reads them closely
    assert "The first picture shows Friend 0" in call["prompt"]
    # Each reference picture's tokens are paid at the image-input price ($8 a million).
    assert image.usage["input_tokens_details"]["image_tokens"] == 16 * 388
    cost, basis = charged("openai", "gpt-image-2", "1536x1024", image)
    assert basis == "usage"
    # 50 text tokens at $5, 6,208 image tokens at $8 and 1,584 output tokens at $30 a million.
    assert cost == Decimal("0.0974")


@pytest.mark.django_db
def test_a_run_at_a_size_the_model_does_not_take_halts_without_a_call(
    make_project, gpt_image_2, fake_openai, drain
):
    gpt_image_2.STUDIO_IMAGE_SIZE = "1000x1000"
    project = make_project(pages=2)
    run = services.generate_missing(project=project).run
    drain(run.pk)
    run.refresh_from_db()
    assert (run.state, run.halt_reason) == ("halted", "config")
    assert "both sides a multiple of 16" in run.message
    assert "STUDIO_IMAGE_SIZE" in run.message
    assert fake_openai.calls == []
    assert SpendEntry.objects.count() == 0
    assert GenerationAttempt.objects.filter(outcome="config").count() == 1
    assert Run.objects.get(pk=run.pk).state == Run.State.HALTED
