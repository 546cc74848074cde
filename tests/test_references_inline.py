"""Reference pictures sent inline, each introduced by a text part naming it: Gemini's
inlineData parts and the chat gateways' image_url data URLs, over real HTTP against the
loopback fakes, which refuse malformed pictures as the services do."""

import base64
import io
import os

import pytest
import requests
from PIL import Image

from generation.providers.base import ImageRequest, Reference, Rejected
from generation.providers.gemini import GeminiProvider
from generation.providers.openai_chat import ChatImageProvider
from tests.conftest import CHAT_TEST_KEY, GEMINI_TEST_KEY

KEEP = "Keep each of them exactly as in its picture (species, colours, clothes, style)."


def picture(colour, size=(300, 200), kind="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=kind)
    return buffer.getvalue()


STYLE = Reference("Style", "soft watercolour", picture((240, 230, 200)), "style")
PETER = Reference("Peter", "a small brown rabbit in a blue jacket", picture((40, 80, 170)))
MOTHER = Reference("Mother", "an old rabbit in a red cloak", picture((180, 40, 40), kind="JPEG"))


def request(*references, prompt="Peter squeezes under the gate") -> ImageRequest:
    return ImageRequest(
        prompt=prompt, size="1024x1024", seed=1, idempotency_key="k-1", references=references
    )


def b64(content: bytes) -> str:
    return base64.b64encode(content).decode()


# --- Gemini ---------------------------------------------------------------------------


def test_gemini_gets_each_picture_inline_after_a_text_part_naming_it(gemini_settings, fake_gemini):
    GeminiProvider().generate(request(STYLE, PETER, MOTHER))

    [call] = fake_gemini.calls
    assert call["body"]["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "Picture 1 shows the book's style: soft watercolour."},
                {"inlineData": {"mimeType": "image/png", "data": b64(STYLE.content)}},
                {"text": "Picture 2 shows Peter: a small brown rabbit in a blue jacket."},
                {"inlineData": {"mimeType": "image/png", "data": b64(PETER.content)}},
                {"text": "Picture 3 shows Mother: an old rabbit in a red cloak."},
                {"inlineData": {"mimeType": "image/jpeg", "data": b64(MOTHER.content)}},
                {"text": f"{KEEP}\n\nPeter squeezes under the gate"},
            ],
        }
    ]
    assert [kind for kind, _ in call["parts"]] == ["text", "image"] * 3 + ["text"]


def test_gemini_without_references_sends_the_prompt_alone(gemini_settings, fake_gemini):
    GeminiProvider().generate(request())
    assert fake_gemini.calls[0]["body"]["contents"][0]["parts"] == [
        {"text": "Peter squeezes under the gate"}
    ]


def test_gemini_2_5_flash_image_takes_three_pictures_and_gemini_3_fourteen(gemini_settings):
    gemini_settings.GEMINI_IMAGE_MODEL = "gemini-2.5-flash-image"
    assert GeminiProvider().max_references == 3
    gemini_settings.GEMINI_IMAGE_MODEL = "gemini-3.1-flash-image"
    assert GeminiProvider().max_references == 14


def test_gemini_sends_no_more_pictures_than_its_model_takes(gemini_settings, fake_gemini):
    gemini_settings.GEMINI_IMAGE_MODEL = "gemini-2.5-flash-image"  # takes three
    extra = Reference("Benjamin", "a rabbit in a tam-o'-shanter", picture((90, 60, 30)))
    GeminiProvider().generate(request(STYLE, PETER, MOTHER, extra))
    names = [text for kind, text in fake_gemini.calls[0]["parts"] if kind == "text"]
    assert len(fake_gemini.calls[0]["images"]) == 3
    assert not any("Benjamin" in text for text in names)


def test_gemini_gets_large_pictures_downscaled_to_1024(gemini_settings, fake_gemini):
    big = Reference("Peter", "a rabbit", picture((40, 80, 170), size=(2048, 3072)))
    GeminiProvider().generate(request(big))
    [image] = fake_gemini.calls[0]["images"]
    assert (image["width"], image["height"], image["format"]) == (683, 1024, "PNG")


def gemini_post(fake, inline: dict):
    body = {"contents": [{"parts": [{"inline_data": inline}, {"text": "A fox"}]}]}
    response = requests.post(
        f"{fake.url}/models/gemini-2.5-flash-image:generateContent",
        json=body,
        headers={"x-goog-api-key": GEMINI_TEST_KEY},
        timeout=5,
    )
    return response.status_code, response.json().get("error", {})


def test_the_gemini_fake_refuses_a_mime_type_gemini_does_not_take(fake_gemini):
    status, error = gemini_post(fake_gemini, {"mime_type": "image/gif", "data": b64(PETER.content)})
    assert (status, error["status"]) == (400, "INVALID_ARGUMENT")
    assert error["message"] == "Unsupported MIME type: image/gif"


def test_the_gemini_fake_refuses_bad_base64(fake_gemini):
    status, error = gemini_post(fake_gemini, {"mime_type": "image/png", "data": "not*base64!!"})
    assert status == 400
    assert "Base64 decoding failed" in error["message"]
    assert "contents[0].parts[0].inline_data.data" in error["message"]


def test_the_gemini_fake_refuses_bytes_that_are_no_picture(fake_gemini):
    status, error = gemini_post(fake_gemini, {"mime_type": "image/png", "data": b64(b"hello")})
    assert status == 400
    assert error["message"].startswith("Unable to process input image")


def test_the_gemini_fake_refuses_a_request_over_its_size_limit(gemini_settings, fake_gemini):
    fake_gemini.max_request_bytes = 1000
    with pytest.raises(Rejected) as caught:
        GeminiProvider().generate(request(PETER, MOTHER))
    assert caught.value.http_status == 400
    assert "payload size exceeds the limit" in caught.value.message


# --- Chat gateways (OpenRouter, Lovable) ---------------------------------------------


def data_url(mime: str, content: bytes) -> str:
    return f"data:{mime};base64,{b64(content)}"


def test_the_chat_gateway_gets_each_picture_as_a_data_url_after_a_text_part_naming_it(
    chat_image_settings, fake_chat_images
):
    ChatImageProvider().generate(request(STYLE, PETER, MOTHER))

    [call] = fake_chat_images.calls
    assert call["body"]["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Picture 1 shows the book's style: soft watercolour."},
                {"type": "image_url", "image_url": {"url": data_url("image/png", STYLE.content)}},
                {
                    "type": "text",
                    "text": "Picture 2 shows Peter: a small brown rabbit in a blue jacket.",
                },
                {"type": "image_url", "image_url": {"url": data_url("image/png", PETER.content)}},
                {"type": "text", "text": "Picture 3 shows Mother: an old rabbit in a red cloak."},
                {
                    "type": "image_url",
                    "image_url": {"url": data_url("image/jpeg", MOTHER.content)},
                },
                {"type": "text", "text": f"{KEEP}\n\nPeter squeezes under the gate"},
            ],
        }
    ]
    assert call["parts"][1] == ("image", "image/png")
    assert call["parts"][5] == ("image", "image/jpeg")


def test_the_chat_gateway_without_references_gets_the_prompt_as_a_string(
    chat_image_settings, fake_chat_images
):
    ChatImageProvider().generate(request())
    assert fake_chat_images.calls[0]["body"]["messages"] == [
        {"role": "user", "content": "Peter squeezes under the gate"}
    ]


def chat_post(fake, url: str):
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "A fox"}]
    response = requests.post(
        f"{fake.url}/chat/completions",
        json={
            "model": "google/gemini-2.5-flash-image",
            "messages": [{"role": "user", "content": content}],
            "modalities": ["image", "text"],
        },
        headers={"Authorization": f"Bearer {CHAT_TEST_KEY}"},
        timeout=5,
    )
    return response.status_code, response.json().get("error", {})


@pytest.mark.parametrize(
    "url",
    [
        "peter.png",
        "http://example.com/peter.png",
        data_url("text/plain", PETER.content),
        "data:image/png;base64,not*base64!!",
        data_url("image/png", b"hello"),
        data_url("image/png", MOTHER.content),  # JPEG bytes declared as PNG
    ],
)
def test_the_chat_fake_refuses_an_image_url_that_is_not_a_picture_it_takes(fake_chat_images, url):
    status, error = chat_post(fake_chat_images, url)
    assert status == 400
    assert "image_url.url" in error["message"]


def test_the_chat_fake_takes_an_https_url_or_a_data_url_of_a_picture(fake_chat_images):
    assert chat_post(fake_chat_images, "https://example.com/peter.png") == (200, {})
    assert chat_post(fake_chat_images, data_url("image/png", PETER.content)) == (200, {})


def noise(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_gemini_makes_the_pictures_smaller_until_together_they_fit_its_request_limit(
    gemini_settings, fake_gemini, monkeypatch
):
    monkeypatch.setattr("generation.providers.gemini.REFERENCE_BYTES", 600_000)
    heavy = [Reference(name, "a rabbit", noise(600)) for name in ("Peter", "Flopsy", "Mopsy")]
    GeminiProvider().generate(request(*heavy))
    images = fake_gemini.calls[0]["images"]
    assert len(images) == 3
    assert sum(len(image["bytes"]) for image in images) <= 600_000
    assert all(image["width"] == image["height"] < 600 for image in images)
