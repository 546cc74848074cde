"""The offline renderer keeps characters the same across pages: each referenced character
is drawn from its reference picture's dominant colours at the place its name gives it; and
a character sheet shows three views of one figure coloured from its description."""

import io

from PIL import Image

from generation.providers.base import ImageRequest, Reference
from generation.providers.embedded import EmbeddedProvider
from generation.providers.embedded_figures import (
    COLOURS,
    SHEET_BACKGROUND,
    body_point,
    colours_of,
    dominant_colours,
    figure_box,
    placement,
)


def generate(prompt, *, references=(), seed=1, size="640x480", subject="page"):
    request = ImageRequest(
        prompt=prompt,
        size=size,
        seed=seed,
        idempotency_key="k",
        caption="Page 1",
        references=references,
        subject=subject,
    )
    result = EmbeddedProvider().generate(request)
    return Image.open(io.BytesIO(result.content)).convert("RGB")


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def close(colour, other, tolerance=12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, other, strict=True))


PETER_SHEET = png(generate("Peter, a small brown rabbit in a blue jacket", subject="sheet"))
PETER = Reference("Peter", "a small brown rabbit in a blue jacket", PETER_SHEET)


def test_the_offline_renderer_takes_as_many_references_as_the_studio_sends(settings):
    settings.STUDIO_MAX_REFERENCES = 4
    assert EmbeddedProvider().max_references == 4


def test_a_sheet_shows_three_figures_on_a_plain_background():
    sheet = generate("Peter, a small brown rabbit in a blue jacket", subject="sheet")
    width, height = sheet.size
    assert sheet.getpixel((2, 2)) == SHEET_BACKGROUND
    # Across the middle of the bodies: three separate runs of the jacket's blue.
    row = [sheet.getpixel((x, int(height * 0.6))) for x in range(width)]
    blue = [close(pixel, COLOURS["blue"]) for pixel in row]
    runs = sum(1 for x in range(1, width) if blue[x] and not blue[x - 1])
    assert runs == 3
    # The heads above are the rabbit's brown, one per view.
    head_row = [sheet.getpixel((x, int(height * 0.36))) for x in range(width)]
    brown = [close(pixel, COLOURS["brown"]) for pixel in head_row]
    assert sum(1 for x in range(1, width) if brown[x] and not brown[x - 1]) == 3


def test_a_sheet_takes_its_colours_from_the_descriptions_colour_words():
    assert colours_of("a small brown rabbit in a blue jacket") == (
        COLOURS["brown"],
        COLOURS["blue"],
    )
    assert colours_of("an old man in a green coat and a red hat")[1] == COLOURS["green"]
    sheet = generate("Mother, a grey rabbit in a red cloak", subject="sheet")
    cloak, fur, _ = dominant_colours(png(sheet))
    assert close(cloak, COLOURS["red"]) and close(fur, COLOURS["grey"], 20)


def test_two_pages_with_the_same_reference_show_the_same_figure_colours_at_the_same_place():
    first = generate("Peter squeezes under the gate", references=(PETER,), seed=3)
    second = generate("Peter runs home past the pond in the rain", references=(PETER,), seed=9)
    jacket, fur, _ = dominant_colours(PETER_SHEET)
    assert close(jacket, COLOURS["blue"]) and close(fur, COLOURS["brown"], 20)

    x, y = body_point("Peter", 640, 480)
    assert first.getpixel((x, y)) == second.getpixel((x, y)) == jacket
    left, top, right, bottom = figure_box("Peter", 640, 480)
    head = ((left + right) // 2, top + (bottom - top) * 20 // 100)
    assert first.getpixel(head) == second.getpixel(head) == fur
    # The pages themselves differ around the figure (their own scenes).
    assert first.crop((0, 0, 640, top)).tobytes() != second.crop((0, 0, 640, top)).tobytes()


def test_a_figure_is_drawn_only_where_its_character_is_referenced():
    without = generate("Peter squeezes under the gate", seed=3)
    x, y = body_point("Peter", 640, 480)
    jacket = dominant_colours(PETER_SHEET)[0]
    assert without.getpixel((x, y)) != jacket


def test_another_character_stands_elsewhere_in_its_own_colours():
    mother_sheet = png(generate("Mother, a grey rabbit in a red cloak", subject="sheet"))
    mother = Reference("Mother", "a grey rabbit in a red cloak", mother_sheet)
    page = generate("Peter and his mother at home", references=(PETER, mother))
    assert body_point("Mother", 640, 480) != body_point("Peter", 640, 480)
    assert page.getpixel(body_point("Mother", 640, 480)) == dominant_colours(mother_sheet)[0]
    assert page.getpixel(body_point("Peter", 640, 480)) == dominant_colours(PETER_SHEET)[0]


def test_an_uploaded_photo_gives_its_own_dominant_colours():
    photo = Image.new("RGB", (200, 300), (255, 255, 255))
    photo.paste((200, 120, 30), (40, 60, 160, 240))
    photo.paste((20, 110, 60), (60, 100, 140, 200))
    colours = dominant_colours(png(photo))
    assert close(colours[0], (200, 120, 30), 4) and close(colours[1], (20, 110, 60), 4)


def test_the_style_reference_frames_the_page_in_its_main_colour():
    style = Image.new("RGB", (120, 80), (200, 150, 60))
    reference = Reference("Style", "warm ochre watercolour", png(style), "style")
    page = generate("A quiet meadow", references=(reference,))
    assert page.getpixel((1, 240)) == page.getpixel((638, 240)) == (200, 150, 60)


def test_a_prop_is_drawn_as_an_object_in_its_colours_where_its_name_puts_it():
    can = Image.new("RGB", (100, 100), (255, 255, 255))
    can.paste((30, 150, 90), (20, 20, 80, 80))
    reference = Reference("Watering can", "a green watering can", png(can), "prop")
    page = generate("The garden", references=(reference,))
    left, top, right, bottom = figure_box("Watering can", 640, 480)
    centre = ((left + right) // 2, bottom - (bottom - top) // 10)
    assert close(page.getpixel(centre), (30, 150, 90), 4)


def test_a_person_is_drawn_without_an_animals_ears_on_the_sheet_and_on_the_page():
    def ear_pixel(image, x, feet, tall):
        u = tall / 100
        return image.getpixel((int(x - 9 * u), int(feet - 74 * u - 25 * u)))

    rabbit = generate("Peter, a small brown rabbit in a blue jacket", subject="sheet")
    man = generate(
        "Mr. McGregor: a tall man with a tan face, in a brown waistcoat", subject="sheet"
    )
    width, height = man.size
    tall, feet = min(height * 0.62, width / 3 * 1.2), height * 0.8
    assert close(ear_pixel(rabbit, width / 6, feet, tall), COLOURS["brown"])
    assert ear_pixel(man, width / 6, feet, tall) == SHEET_BACKGROUND
    assert close(man.getpixel((int(width / 6), int(feet - 74 * tall / 100))), COLOURS["tan"])

    mcgregor = Reference("Mr. McGregor", "an old gardener, a tall man", png(man))
    page = generate("In the garden", references=(mcgregor,))
    x, feet, tall = placement("Mr. McGregor", *page.size)
    blank = generate("In the garden")  # the same scene, nobody drawn on it
    assert ear_pixel(page, x, feet, tall) == ear_pixel(blank, x, feet, tall)
    assert close(page.getpixel(body_point("Mr. McGregor", *page.size)), COLOURS["brown"])


def test_mrs_rabbit_keeps_her_grey_fur_and_red_dress_on_every_size_of_page():
    # The demo's description; her sheet has more grey (head, ears, legs) than red (the
    # dress), so the colours must go where the description puts them, not by how much of
    # the sheet each covers.
    from studio.management.commands.seed_demo import DEMO_CHARACTERS

    (description,) = [text for name, text, _ in DEMO_CHARACTERS if name == "Mrs. Rabbit"]
    for size in ("1024x1024", "640x480", "256x256"):
        sheet = png(generate(f"Mrs. Rabbit: {description}", subject="sheet", size=size))
        mother = Reference("Mrs. Rabbit", description, sheet)
        page = generate("Mrs. Rabbit goes to the baker's", references=(mother,), size=size)
        width, height = page.size
        body = page.getpixel(body_point("Mrs. Rabbit", width, height))
        left, top, right, bottom = figure_box("Mrs. Rabbit", width, height)
        head = page.getpixel(((left + right) // 2, top + (bottom - top) * 20 // 100))
        assert close(body, COLOURS["red"], 20), (size, body)
        assert close(head, COLOURS["grey"], 20), (size, head)
