"""The offline renderer's characters (issue 18): a figure drawn from a reference picture's
dominant colours, always at the same place and size for the same name, so the offline demo
visibly keeps a character the same from page to page; and a character sheet (front,
three-quarter and back view on a plain background) whose colours come from the colour words
of its description ("a brown rabbit in a blue jacket").
"""

import hashlib
import io
import re

from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from .base import Reference

# Colour words and the colour each draws with.
COLOURS = {
    "red": (190, 45, 45),
    "scarlet": (200, 35, 40),
    "crimson": (160, 20, 50),
    "pink": (235, 150, 175),
    "orange": (235, 135, 40),
    "ginger": (200, 110, 45),
    "yellow": (240, 205, 60),
    "golden": (215, 170, 50),
    "green": (60, 140, 70),
    "blue": (45, 85, 175),
    "navy": (30, 40, 100),
    "purple": (120, 60, 150),
    "violet": (140, 90, 190),
    "brown": (130, 90, 55),
    "tan": (200, 160, 110),
    "white": (245, 245, 240),
    "cream": (240, 228, 200),
    "grey": (140, 140, 145),
    "gray": (140, 140, 145),
    "silver": (190, 190, 200),
    "black": (35, 35, 40),
}
# Nouns a colour word names the clothes of (the rest name the fur, skin or feathers).
CLOTHES = {
    "jacket",
    "coat",
    "cloak",
    "dress",
    "shirt",
    "apron",
    "waistcoat",
    "vest",
    "trousers",
    "skirt",
    "scarf",
    "hat",
    "cap",
    "bonnet",
    "shawl",
    "jumper",
    "sweater",
    "smock",
    "overalls",
    "boots",
    "shoes",
    "tunic",
    "robe",
}
# Words that make a figure a person (drawn without ears); anyone else is an animal.
PEOPLE = {
    "man",
    "woman",
    "boy",
    "girl",
    "person",
    "human",
    "lady",
    "gentleman",
    "gardener",
    "farmer",
    "child",
    "king",
    "queen",
}
FUR = (150, 120, 95)
CLOTH = (70, 90, 140)
ACCENT = (235, 225, 205)
SHEET_BACKGROUND = (246, 244, 238)
VIEWS = ("Front", "Three-quarter", "Back")


def named_colours(description: str) -> tuple[tuple | None, tuple | None]:
    """Return the (fur, clothes) colours a description names, None where it names none: a
    colour before a garment ("blue jacket") colours the clothes, any other ("brown
    rabbit") the fur; the first of each counts."""
    words = re.findall(r"[a-z]+", description.lower())
    fur = cloth = None
    for n, word in enumerate(words):
        if word not in COLOURS:
            continue
        following = words[n + 1 : n + 3]
        if any(noun in CLOTHES for noun in following):
            cloth = cloth or COLOURS[word]
        else:
            fur = fur or COLOURS[word]
    return fur, cloth


def colours_of(description: str) -> tuple[tuple, tuple]:
    """Return (fur, clothes) colours from a description's colour words (named_colours),
    with the renderer's own where it names none."""
    fur, cloth = named_colours(description)
    return fur or FUR, cloth or CLOTH


def figure_colours(content: bytes, description: str) -> tuple[tuple, tuple, tuple]:
    """Return (clothes, fur, details) for a character drawn from its reference picture.

    The picture gives the shades; the description says which is which. How much of the
    picture a colour covers does not: on a sheet the head, ears and legs together cover
    more than the dress, so "a grey rabbit in a red dress" would come out a red rabbit in a
    grey coat. Each colour the description names takes the picture's colour nearest to it;
    without colour words the most common colour is the clothes, as before."""
    found = dominant_colours(content)
    fur_named, cloth_named = named_colours(description)
    chosen: dict[str, tuple] = {}
    if fur_named and cloth_named:
        # The pair nearest to what is named, two different colours of the picture.
        cloth, fur = min(
            ((c, f) for c in found for f in found if c != f),
            key=lambda pair: _distance(pair[0], cloth_named) + _distance(pair[1], fur_named),
            default=(found[0], found[0]),
        )
        chosen = {"cloth": cloth, "fur": fur}
    elif cloth_named:
        chosen = {"cloth": min(found, key=lambda colour: _distance(colour, cloth_named))}
    elif fur_named:
        chosen = {"fur": min(found, key=lambda colour: _distance(colour, fur_named))}
    rest = iter([colour for colour in found if colour not in chosen.values()] + found)
    cloth = chosen.get("cloth") or next(rest)
    fur = chosen.get("fur") or next(rest)
    return cloth, fur, next(rest)


def _distance(colour, other) -> int:
    return sum((a - b) ** 2 for a, b in zip(colour, other, strict=True))


def is_person(description: str) -> bool:
    """Return whether a description names a person (drawn without an animal's ears)."""
    return bool(PEOPLE & set(re.findall(r"[a-z]+", description.lower())))


def dominant_colours(content: bytes, count: int = 3) -> list[tuple[int, int, int]]:
    """Return a picture's most common colours, most common first: the plain background
    (the corners' colour, or near white) is left out, and the rest quantized with Pillow's
    median cut."""
    try:
        with Image.open(io.BytesIO(content)) as image:
            small = image.convert("RGB")
            small.thumbnail((96, 96))
    except (UnidentifiedImageError, OSError, ValueError):
        return [CLOTH, FUR, ACCENT][:count]
    w, h = small.size
    corners = {small.getpixel(point) for point in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))}
    data = small.tobytes()
    every = [tuple(data[i : i + 3]) for i in range(0, len(data), 3)]
    pixels = [
        p for p in every if not _background(p) and not any(_near(p, c) for c in corners)
    ] or every
    figure = Image.new("RGB", (len(pixels), 1))
    figure.putdata(pixels)
    quantized = figure.quantize(colors=count + 3, method=Image.Quantize.MEDIANCUT)
    palette = quantized.getpalette() or []
    found = sorted(quantized.getcolors() or [], reverse=True)
    colours = [tuple(palette[index * 3 : index * 3 + 3]) for _, index in found]
    # Outlines and shadows are not what a character is coloured: near-black goes last.
    chosen = sorted(colours, key=lambda colour: max(colour) < 60)[:count]
    while len(chosen) < count:
        chosen.append(chosen[-1] if chosen else FUR)
    return chosen


def _near(colour, other, tolerance: int = 24) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, other, strict=True))


def _background(colour) -> bool:
    return min(colour) >= 225 and max(colour) - min(colour) <= 20


def placement(name: str, width: int, height: int) -> tuple[float, float, float]:
    """Return (centre x, feet y, figure height) for a character: from a stable hash of its
    name, so it stands at the same place and size on every page that names it."""
    digest = hashlib.sha256(name.strip().lower().encode()).digest()
    slots = (0.14, 0.28, 0.42, 0.58, 0.72, 0.86)
    x = slots[digest[0] % len(slots)] * width
    x += ((digest[1] / 255) - 0.5) * 0.06 * width
    feet = height * (0.86 + digest[2] / 255 * 0.04)
    tall = height * (0.3 + digest[3] / 255 * 0.08)
    return x, feet, tall


def figure_box(name: str, width: int, height: int) -> tuple[int, int, int, int]:
    """Return the (left, top, right, bottom) box of a character's figure on a page."""
    x, feet, tall = placement(name, width, height)
    return int(x - tall * 0.3), int(feet - tall), int(x + tall * 0.3), int(feet)


def body_point(name: str, width: int, height: int) -> tuple[int, int]:
    """Return a point in the middle of a character's body (its clothes) on a page."""
    x, feet, tall = placement(name, width, height)
    return int(x - tall * 0.1), int(feet - tall * 0.38)  # beside the buttons


def draw_figure(
    draw: ImageDraw.ImageDraw, x, feet, tall, colours, *, view="Front", ears=True
) -> None:
    """Draw a standing figure with its feet at (x, feet), `tall` high: its body (the
    clothes) in the first colour, head, ears (an animal's; a person has none) and legs in
    the second, details in the third."""
    cloth, fur, accent = colours
    u = tall / 100
    outline = (40, 35, 35)
    line = max(1, int(u * 1.2))
    # Legs and feet.
    draw.rectangle([x - 12 * u, feet - 22 * u, x - 4 * u, feet], fill=fur, outline=outline)
    draw.rectangle([x + 4 * u, feet - 22 * u, x + 12 * u, feet], fill=fur, outline=outline)
    # Body (the clothes).
    draw.rounded_rectangle(
        [x - 20 * u, feet - 60 * u, x + 20 * u, feet - 18 * u],
        radius=8 * u,
        fill=cloth,
        outline=outline,
        width=line,
    )
    # Head, ears.
    head_dx = 5 * u if view == "Three-quarter" else 0
    cx, cy = x + head_dx, feet - 74 * u
    for ex in (-9, 9) if ears else ():
        draw.ellipse(
            [cx + (ex - 4) * u, cy - 32 * u, cx + (ex + 4) * u, cy - 6 * u],
            fill=fur,
            outline=outline,
            width=line,
        )
    draw.ellipse(
        [cx - 15 * u, cy - 15 * u, cx + 15 * u, cy + 15 * u], fill=fur, outline=outline, width=line
    )
    if view == "Back":
        if ears:  # an animal's tail
            draw.ellipse([x - 6 * u, feet - 26 * u, x + 6 * u, feet - 14 * u], fill=accent)
        return
    # Face: two eyes (one nearer the edge in three-quarter view), a nose, buttons.
    eyes = (-6, 6) if view == "Front" else (1, 10)
    for ex in eyes:
        draw.ellipse([cx + (ex - 2) * u, cy - 5 * u, cx + (ex + 2) * u, cy - 1 * u], fill=outline)
    nose = 0 if view == "Front" else 8
    draw.ellipse([cx + (nose - 2) * u, cy + 3 * u, cx + (nose + 2) * u, cy + 7 * u], fill=accent)
    for by in (-50, -40, -30):
        draw.ellipse(
            [x + head_dx - 2 * u, feet + (by - 2) * u, x + head_dx + 2 * u, feet + (by + 2) * u],
            fill=accent,
        )


def draw_characters(image: Image.Image, references) -> None:
    """Draw each character of a page from its reference picture, where its name puts it; a
    prop as a small object there in its colours, a setting as a band of its colours along
    the ground; the style reference frames the page in its main colour."""
    draw = ImageDraw.Draw(image)
    width, height = image.size
    font = ImageFont.load_default(size=max(10, int(min(width, height) / 40)))
    for reference in references:
        colours = dominant_colours(reference.content)
        if reference.kind == "character":
            colours = figure_colours(reference.content, reference.description)
        if reference.kind == "style":
            border = max(2, int(min(width, height) / 60))
            draw.rectangle([0, 0, width - 1, height - 1], outline=colours[0], width=border)
            continue
        x, feet, tall = placement(reference.name, width, height)
        if reference.kind == "setting":
            band = height * 0.05
            top = height * 0.94 - band
            for n, colour in enumerate(colours):
                left, right = width * n / len(colours), width * (n + 1) / len(colours)
                draw.rectangle([left, top, right, top + band], fill=colour)
            continue
        if reference.kind == "prop":
            side = tall * 0.25
            draw.rounded_rectangle(
                [x - side / 2, feet - side, x + side / 2, feet],
                radius=side / 6,
                fill=colours[0],
                outline=colours[1],
                width=max(1, int(side / 12)),
            )
        else:
            draw_figure(draw, x, feet, tall, colours, ears=not is_person(reference.description))
        box = draw.textbbox((0, 0), reference.name, font=font)
        label_x = x - (box[2] - box[0]) / 2
        draw.text(
            (label_x, feet - tall - (box[3] - box[1]) - 4),
            reference.name,
            font=font,
            fill=(30, 30, 40),
            stroke_width=2,
            stroke_fill=(255, 255, 255),
        )


def render_sheet(
    description: str, width: int, height: int, references: tuple[Reference, ...] = ()
) -> Image.Image:
    """Return a character sheet: three views (front, three-quarter, back) of one figure
    whose colours come from the description's colour words, on a plain background, each
    view labelled. A style reference, if any, frames the sheet in its main colour."""
    fur, cloth = colours_of(description)
    image = Image.new("RGB", (width, height), SHEET_BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(10, int(min(width, height) / 30)))
    tall = min(height * 0.62, width / 3 * 1.2)
    feet = height * 0.8
    for n, view in enumerate(VIEWS):
        x = width * (2 * n + 1) / 6
        draw_figure(
            draw, x, feet, tall, (cloth, fur, ACCENT), view=view, ears=not is_person(description)
        )
        box = draw.textbbox((0, 0), view, font=font)
        draw.text(
            (x - (box[2] - box[0]) / 2, feet + height * 0.05), view, font=font, fill=(60, 60, 70)
        )
    for reference in references:
        if reference.kind == "style":
            colour = dominant_colours(reference.content)[0]
            border = max(2, int(min(width, height) / 60))
            draw.rectangle([0, 0, width - 1, height - 1], outline=colour, width=border)
    return image
