"""Reference pictures sent to the job services, over real HTTP against their loopback
fakes: Replicate's FLUX Kontext gets one composed, labelled sheet as `input_image`; fal's
edit models get `image_urls` (or Kontext one `image_url`); models that take no picture
(flux-schnell) get none. The fakes refuse malformed pictures as the services do."""

import base64
import io

import pytest
import requests
from PIL import Image

from generation.providers.base import ImageRequest, Reference, Rejected
from generation.providers.fal import FalProvider
from generation.providers.replicate_image import ReplicateImageProvider
from tests.conftest import FAL_TEST_KEY

KEEP = "Keep each of them exactly as in its picture (species, colours, clothes, style)."
BLUE, RED = (40, 80, 170), (180, 40, 40)


def picture(colour, size=(300, 200), kind="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=kind)
    return buffer.getvalue()


PETER = Reference("Peter", "a small brown rabbit in a blue jacket", picture(BLUE))
MOTHER = Reference("Mother", "an old rabbit in a red cloak", picture(RED, kind="JPEG"))


def request(*references, prompt="Peter squeezes under the gate") -> ImageRequest:
    return ImageRequest(
        prompt=prompt, size="1024x1024", seed=5, idempotency_key="k-1", references=references
    )


def no_sleep(seconds):
    pass


def colour_near(image: Image.Image, x: int, y: int, colour, tolerance=30) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(image.getpixel((x, y)), colour, strict=True))


# --- Replicate ------------------------------------------------------------------------


@pytest.fixture
def kontext(replicate_image_settings):
    replicate_image_settings.STUDIO_REPLICATE_IMAGE_MODEL = "black-forest-labs/flux-kontext-pro"
    return ReplicateImageProvider()


def test_flux_kontext_gets_one_composed_sheet_of_the_pages_references(kontext, fake_predictions):
    fake_predictions.polls_needed = 0
    image = kontext.generate(request(PETER, MOTHER), sleep=no_sleep)

    assert image.width == 64
    [inputs] = fake_predictions.inputs
    assert set(inputs) == {"prompt", "aspect_ratio", "output_format", "seed", "input_image"}
    assert inputs["input_image"].startswith("data:image/jpeg;base64,")
    assert inputs["prompt"] == (
        "The input picture is a reference sheet, labelled left to right: "
        "Peter: a small brown rabbit in a blue jacket; Mother: an old rabbit in a red cloak. "
        f"{KEEP}\n\nPeter squeezes under the gate"
    )
    [sent] = fake_predictions.input_images
    assert sent["format"] == "JPEG"
    assert len(sent["bytes"]) <= 1024 * 1024
    sheet = Image.open(io.BytesIO(sent["bytes"])).convert("RGB")
    width, height = sheet.size
    assert width <= 1024 and width > height  # side by side, downscaled to 1024
    # Peter's picture on the left, Mother's on the right, each above its label.
    assert colour_near(sheet, width // 4, height // 2 - height // 10, BLUE)
    assert colour_near(sheet, 3 * width // 4, height // 2 - height // 10, RED)
    label_band = sheet.crop((0, int(height * 0.85), width // 2, height)).convert("L")
    assert label_band.getextrema()[0] < 100  # dark letters of the name under the picture


def test_flux_kontext_without_references_draws_from_the_prompt_alone(kontext, fake_predictions):
    fake_predictions.polls_needed = 0
    kontext.generate(request(), sleep=no_sleep)
    [inputs] = fake_predictions.inputs
    assert "input_image" not in inputs
    assert inputs["prompt"] == "Peter squeezes under the gate"


def test_flux_schnell_takes_no_references_and_sends_none(
    replicate_image_settings, fake_predictions
):
    provider = ReplicateImageProvider()
    assert provider.max_references == 0
    fake_predictions.polls_needed = 0
    provider.generate(request(PETER), sleep=no_sleep)
    [inputs] = fake_predictions.inputs
    assert inputs == {
        "prompt": "Peter squeezes under the gate",
        "aspect_ratio": "1:1",
        "num_outputs": 1,
        "output_format": "png",
        "seed": 5,
    }


def test_flux_kontext_takes_as_many_references_as_the_studio_sends(kontext, settings):
    settings.STUDIO_MAX_REFERENCES = 3
    assert kontext.max_references == 3


def replicate_create(fake, inputs: dict):
    response = requests.post(
        f"{fake.url}/models/black-forest-labs/flux-kontext-pro/predictions",
        json={"input": {"prompt": "A fox", **inputs}},
        headers={"Authorization": "Bearer r8_test_token"},
        timeout=5,
    )
    return response.status_code, response.json()


@pytest.mark.parametrize(
    "value",
    [
        "peter.png",
        "data:text/plain;base64," + base64.b64encode(b"hello").decode(),
        "data:image/png;base64,not*base64!!",
        "data:image/png;base64," + base64.b64encode(MOTHER.content).decode(),  # a JPEG
    ],
)
def test_the_replicate_fake_refuses_an_input_image_that_is_not_a_picture(fake_predictions, value):
    status, body = replicate_create(fake_predictions, {"input_image": value})
    assert status == 422
    assert body["invalid_fields"][0]["field"] == "input.input_image"


def test_the_replicate_fake_refuses_a_safety_tolerance_over_2_with_an_input_image(
    fake_predictions,
):
    data = "data:image/png;base64," + base64.b64encode(PETER.content).decode()
    status, body = replicate_create(fake_predictions, {"input_image": data, "safety_tolerance": 5})
    assert status == 422
    assert body["invalid_fields"][0]["field"] == "input.safety_tolerance"


def test_a_refused_input_image_is_this_pages_rejection_not_the_accounts(kontext):
    from generation.providers.replicate_image import classify

    body = {
        "title": "Input validation failed",
        "detail": "- input.input_image: Does not match format 'uri'",
        "invalid_fields": [{"type": "format", "field": "input.input_image"}],
    }
    assert isinstance(classify(422, {}, body), Rejected)


# --- fal --------------------------------------------------------------------------------


@pytest.fixture
def fal(fal_settings):
    def make(model: str) -> FalProvider:
        fal_settings.STUDIO_FAL_IMAGE_MODEL = model
        return FalProvider()

    return make


def test_nano_banana_edit_gets_each_picture_as_a_data_url_in_image_urls(fal, fake_fal):
    provider = fal("fal-ai/nano-banana/edit")
    provider.generate(request(PETER, MOTHER), sleep=no_sleep)

    [call] = fake_fal.calls
    assert call["model"] == "fal-ai/nano-banana/edit"
    assert call["body"]["image_urls"] == [
        "data:image/png;base64," + base64.b64encode(PETER.content).decode(),
        "data:image/jpeg;base64," + base64.b64encode(MOTHER.content).decode(),
    ]
    assert call["body"]["prompt"] == (
        "The first picture shows Peter: a small brown rabbit in a blue jacket. "
        "The second picture shows Mother: an old rabbit in a red cloak. "
        f"{KEEP}\n\nPeter squeezes under the gate"
    )
    assert call["body"]["aspect_ratio"] == "1:1"
    assert [image["mime_type"] for image in call["images"]] == ["image/png", "image/jpeg"]


def test_nano_banana_edit_without_references_goes_to_its_text_to_image_sibling(fal, fake_fal):
    fal("fal-ai/nano-banana/edit").generate(request(), sleep=no_sleep)
    [call] = fake_fal.calls
    assert call["model"] == "fal-ai/nano-banana"
    assert "image_urls" not in call["body"]


def test_flux_kontext_on_fal_gets_one_composed_sheet_as_image_url(fal, fake_fal):
    fal("fal-ai/flux-pro/kontext").generate(request(PETER, MOTHER), sleep=no_sleep)
    [call] = fake_fal.calls
    assert call["model"] == "fal-ai/flux-pro/kontext"
    assert call["body"]["image_url"].startswith("data:image/jpeg;base64,")
    [sheet] = call["images"]
    assert sheet["size"][0] > sheet["size"][1]


def test_fal_pictures_are_downscaled_to_1024(fal, fake_fal):
    big = Reference("Peter", "a rabbit", picture(BLUE, size=(3000, 1500), kind="WEBP"))
    fal("fal-ai/nano-banana/edit").generate(request(big), sleep=no_sleep)
    [image] = fake_fal.calls[0]["images"]
    assert (image["mime_type"], image["size"]) == ("image/webp", (1024, 512))


def test_flux_schnell_on_fal_takes_no_references(fal, fake_fal):
    provider = fal("fal-ai/flux/schnell")
    assert provider.max_references == 0
    provider.generate(request(PETER), sleep=no_sleep)
    assert set(fake_fal.calls[0]["body"]) == {
        "prompt",
        "image_size",
        "num_images",
        "seed",
        "enable_safety_checker",
    }


def fal_submit(fake, model: str, body: dict):
    response = requests.post(
        f"{fake.origin}/{model}",
        json={"prompt": "A fox", **body},
        headers={"Authorization": f"Key {FAL_TEST_KEY}"},
        timeout=5,
    )
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body", "image_urls"]),
        ({"image_urls": ["peter.png"]}, ["body", "image_urls", 0]),
        ({"image_urls": ["data:image/png;base64,not*base64!!"]}, ["body", "image_urls", 0]),
        (
            {"image_urls": ["data:text/plain;base64," + base64.b64encode(b"hi").decode()]},
            ["body", "image_urls", 0],
        ),
        ({"image_urls": ["https://example.com/p.png"] * 11}, ["body", "image_urls"]),
        ({"image_urls": ["https://example.com/p.png"], "aspect_ratio": "7:3"}, None),
    ],
)
def test_the_fal_fake_refuses_bad_image_urls_as_fal_does(fake_fal, body, loc):
    status, answer = fal_submit(fake_fal, "fal-ai/nano-banana/edit", body)
    assert status == 422
    assert answer["detail"][0]["loc"] == (loc or ["body", "aspect_ratio"])


def test_a_refused_reference_picture_on_fal_is_this_pages_rejection(fal, fake_fal):
    from generation.providers.fal import classify

    body = {"detail": [{"loc": ["body", "image_urls", 0], "msg": "bad", "type": "url_parsing"}]}
    assert isinstance(classify(422, {}, body), Rejected)
