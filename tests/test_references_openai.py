"""Reference pictures sent to OpenAI images (POST /images/edits, multipart image[] parts),
over real HTTP against the loopback fake, which refuses malformed edits as the service does."""

import io
import os

import pytest
import requests
from PIL import Image

from generation.providers.base import ImageRequest, Reference, Rejected
from generation.providers.openai import OpenAIProvider
from tests.conftest import TEST_API_KEY


def picture(colour, size=(300, 200), kind="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=kind)
    return buffer.getvalue()


def noise(size=(200, 200)) -> bytes:
    """Return a PNG of random pixels: it does not compress, so it weighs ~120 kB."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


STYLE = Reference("Style", "soft watercolour, ink outlines", picture((240, 230, 200)), "style")
PETER = Reference("Peter", "a small brown rabbit in a blue jacket", picture((40, 80, 170)))
MOTHER = Reference("Mother", "an old rabbit in a red cloak", picture((180, 40, 40), kind="JPEG"))


def request(*references, prompt="Peter squeezes under the gate") -> ImageRequest:
    return ImageRequest(
        prompt=prompt,
        size="1024x1024",
        seed=1,
        idempotency_key="studio-illustration-7-attempt-1",
        references=references,
    )


@pytest.fixture
def provider(openai_settings):
    return OpenAIProvider()


def edit(fake, files, fields=None):
    """POST a hand-made multipart edit to the fake; return its status and error."""
    fields = fields or {"model": "gpt-image-1", "prompt": "A fox"}
    response = requests.post(
        f"{fake.url}/images/edits",
        # Fields as parts without a file name, so the body is multipart even with no file.
        files=[(name, (None, value)) for name, value in fields.items()] + (files or []),
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        timeout=5,
    )
    return response.status_code, response.json().get("error", {})


def test_a_page_with_references_goes_to_edits_with_one_image_part_per_picture_in_order(
    provider, fake_openai
):
    image = provider.generate(request(STYLE, PETER, MOTHER))

    assert (image.width, image.height) == (64, 64)
    [call] = fake_openai.calls
    assert call["path"] == "/v1/images/edits"
    assert [part["field"] for part in call["images"]] == ["image[]", "image[]", "image[]"]
    assert [part["filename"] for part in call["images"]] == ["style.png", "peter.png", "mother.jpg"]
    assert [part["content_type"] for part in call["images"]] == [
        "image/png",
        "image/png",
        "image/jpeg",
    ]
    assert [part["bytes"] for part in call["images"]] == [
        STYLE.content,
        PETER.content,
        MOTHER.content,
    ]
    assert call["body"] == {
        "model": "gpt-image-1",
        "prompt": (
            "The first picture shows the book's style: soft watercolour, ink outlines. "
            "The second picture shows Peter: a small brown rabbit in a blue jacket. "
            "The third picture shows Mother: an old rabbit in a red cloak. "
            "Keep each of them exactly as in its picture (species, colours, clothes, style)."
            "\n\nPeter squeezes under the gate"
        ),
        "size": "1024x1024",
        "n": "1",
        "input_fidelity": "high",
    }
    assert call["authorization"] == f"Bearer {TEST_API_KEY}"
    assert call["idempotency_key"] == "studio-illustration-7-attempt-1"


def test_a_page_without_references_still_goes_to_generations_as_json(provider, fake_openai):
    provider.generate(request())
    [call] = fake_openai.calls
    assert call["path"] == "/v1/images/generations"
    assert call["body"]["prompt"] == "Peter squeezes under the gate"


def test_gpt_image_1_mini_gets_the_pictures_without_input_fidelity(openai_settings, fake_openai):
    openai_settings.STUDIO_IMAGE_MODEL = "gpt-image-1-mini"
    OpenAIProvider().generate(request(PETER))
    [call] = fake_openai.calls
    assert [part["filename"] for part in call["images"]] == ["peter.png"]
    assert "input_fidelity" not in call["body"]


def test_dall_e_models_take_no_references_and_get_a_plain_generation(openai_settings, fake_openai):
    openai_settings.STUDIO_IMAGE_MODEL = "dall-e-3"
    provider = OpenAIProvider()
    assert provider.max_references == 0
    provider.generate(request(PETER))
    [call] = fake_openai.calls
    assert call["path"] == "/v1/images/generations"
    assert call["body"]["prompt"] == "Peter squeezes under the gate"


def test_a_large_picture_is_downscaled_keeping_its_aspect_and_format(provider, fake_openai):
    big = Reference("Peter", "a rabbit", picture((40, 80, 170), size=(4000, 2000), kind="WEBP"))
    provider.generate(request(big))
    [part] = fake_openai.calls[0]["images"]
    assert (part["width"], part["height"]) == (1536, 768)
    assert part["content_type"] == "image/webp"
    assert part["format"] == "WEBP"


def test_a_gif_reference_is_sent_as_png(provider, fake_openai):
    gif = Reference("Peter", "a rabbit", picture((40, 80, 170), kind="GIF"))
    provider.generate(request(gif))
    [part] = fake_openai.calls[0]["images"]
    assert (part["content_type"], part["format"], part["filename"]) == (
        "image/png",
        "PNG",
        "peter.png",
    )


def test_the_services_refusal_of_an_oversize_picture_is_this_pages_rejection(provider, fake_openai):
    fake_openai.max_image_bytes = 50_000
    with pytest.raises(Rejected) as caught:
        provider.generate(request(Reference("Peter", "a rabbit", noise())))
    assert caught.value.http_status == 400
    assert caught.value.code == "image_too_large"
    assert fake_openai.calls[0]["status"] == 400


def test_the_fake_refuses_an_edit_without_any_image_part(fake_openai):
    status, error = edit(fake_openai, files=None)
    assert status == 400
    assert (error["param"], error["code"]) == ("image", "missing_required_parameter")


@pytest.mark.parametrize("mime", ["text/plain", "image/gif"])
def test_the_fake_refuses_a_picture_of_a_type_it_does_not_take(fake_openai, mime):
    status, error = edit(fake_openai, [("image[]", ("peter.png", PETER.content, mime))])
    assert status == 400
    assert error["code"] == "unsupported_file_mimetype"
    assert mime in error["message"]


def test_the_fake_refuses_bytes_that_are_not_the_declared_picture(fake_openai):
    status, error = edit(fake_openai, [("image[]", ("peter.png", MOTHER.content, "image/png"))])
    assert status == 400
    assert error["code"] == "invalid_image_file"


def test_the_fake_refuses_more_than_sixteen_pictures(fake_openai):
    files = [("image[]", (f"p{n}.png", PETER.content, "image/png")) for n in range(17)]
    status, error = edit(fake_openai, files)
    assert status == 400
    assert error["code"] == "too_many_images"


def test_the_fake_refuses_an_oversize_picture(fake_openai):
    fake_openai.max_image_bytes = 50_000
    status, error = edit(fake_openai, [("image[]", ("peter.png", noise(), "image/png"))])
    assert status == 400
    assert error["code"] == "image_too_large"


def test_the_fake_refuses_input_fidelity_on_gpt_image_1_mini(fake_openai):
    status, error = edit(
        fake_openai,
        [("image[]", ("peter.png", PETER.content, "image/png"))],
        {"model": "gpt-image-1-mini", "prompt": "A fox", "input_fidelity": "high"},
    )
    assert status == 400
    assert error["param"] == "input_fidelity"


def test_the_fake_refuses_a_json_edit(fake_openai):
    response = requests.post(
        f"{fake_openai.url}/images/edits",
        json={"model": "gpt-image-1", "prompt": "A fox", "image": "peter.png"},
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_content_type"


def test_the_fake_takes_a_single_image_part_named_image(fake_openai):
    status, error = edit(fake_openai, [("image", ("peter.png", PETER.content, "image/png"))])
    assert (status, error) == (200, {})
