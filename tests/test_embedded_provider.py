import io

from PIL import Image

from generation.providers.base import ImageRequest, verify_image
from generation.providers.embedded import EmbeddedProvider


def render(prompt: str, *, seed: int = 1, size: str = "320x240"):
    request = ImageRequest(
        prompt=prompt, size=size, seed=seed, idempotency_key="k", caption="Page 3"
    )
    return EmbeddedProvider().generate(request)


def test_it_renders_a_valid_png_of_the_requested_size():
    result = render("A rabbit in a blue jacket under the moon", size="320x240")
    with Image.open(io.BytesIO(result.content)) as image:
        assert image.format == "PNG"
        assert image.size == (320, 240)
    assert (result.width, result.height) == (320, 240)
    assert verify_image(result.content) == (320, 240)


def test_different_prompts_give_different_images():
    first = render("A rabbit eats lettuces in the garden")
    second = render("Mr. McGregor chases him past the tool-shed at night")
    assert first.content != second.content


def test_the_same_prompt_and_seed_give_the_same_image():
    assert (
        render("The pond and the white cat").content == render("The pond and the white cat").content
    )
    assert render("The pond", seed=1).content != render("The pond", seed=2).content


def test_it_is_a_composed_scene_not_a_flat_colour():
    result = render("A cottage by the river with trees and a fence")
    with Image.open(io.BytesIO(result.content)) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert len(colours) > 50


def test_the_picture_does_not_name_its_page_so_a_moved_page_keeps_a_true_picture():
    def drawn_for(caption: str) -> bytes:
        request = ImageRequest(
            prompt="A rabbit by the gate",
            size="320x240",
            seed=4,
            idempotency_key="k",
            caption=caption,
        )
        return EmbeddedProvider().generate(request).content

    assert drawn_for("Page 3") == drawn_for("Page 17")
