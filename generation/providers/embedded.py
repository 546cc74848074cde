"""The offline renderer: an honest draft illustration drawn with Pillow, no network.

The scene is composed from the prompt's words: time of day and weather pick the sky,
nouns pick what stands in the landscape (trees, a house, water, a rabbit, a fence,
vegetables), and a hash of the whole prompt and the seed picks the palette and layout.
The same prompt and seed always give the same picture; different pages look different.
"""

import colorsys
import hashlib
import io
import math
import random
import re

from django.conf import settings
from PIL import Image, ImageDraw, ImageFont

from .base import GeneratedImage, ImageRequest, parse_size
from .embedded_figures import draw_characters, render_sheet

THEMES = {
    "night": {"night", "moon", "dark", "evening", "stars", "sleep", "bed", "asleep", "dusk"},
    "rain": {"rain", "wet", "storm", "cold", "tears", "cried", "crying", "sobs"},
    "tree": {"tree", "trees", "wood", "woods", "forest", "fir", "bank", "hedge", "bushes"},
    "house": {"house", "home", "cottage", "shed", "door", "window", "burrow", "kitchen"},
    "water": {"water", "pond", "river", "sea", "lake", "can", "watering", "fish", "stream"},
    "rabbit": {"rabbit", "rabbits", "bunny", "peter", "flopsy", "mopsy", "cottontail", "bunnies"},
    "fence": {"gate", "fence", "wall", "net", "gooseberry"},
    "veg": {
        "cabbage",
        "cabbages",
        "lettuce",
        "lettuces",
        "beans",
        "radishes",
        "parsley",
        "potatoes",
        "garden",
        "peas",
        "cucumber",
        "vegetables",
    },
    "person": {"mr", "mrs", "man", "woman", "mother", "gardener", "mcgregor", "girl", "boy"},
    "bird": {"bird", "birds", "sparrow", "sparrows", "robin", "owl", "cat", "mouse"},
}


def words_of(prompt: str) -> set[str]:
    return set(re.findall(r"[a-z]+", prompt.lower()))


class EmbeddedProvider:
    name = "embedded"
    model = "embedded-draft-1"

    @property
    def max_references(self) -> int:
        return int(settings.STUDIO_MAX_REFERENCES)

    def generate(self, request: ImageRequest) -> GeneratedImage:
        width, height = parse_size(request.size)
        references = request.references[: self.max_references]
        if request.subject == "sheet":
            image = render_sheet(request.prompt, width, height, references)
        else:
            # No page badge: a page that moves keeps its picture, which must not name a
            # number. The page's own characters stand in for the generic rabbit and person.
            drawn = any(reference.kind != "style" for reference in references)
            image = render_scene(
                request.prompt,
                request.seed,
                width,
                height,
                without={"rabbit", "person"} if drawn else set(),
            )
            if references:
                # Each character drawn from its reference, where its name puts it; then
                # the prompt's line again on top.
                draw_characters(image, references)
                unit = min(width, height) / 100
                _draw_caption(ImageDraw.Draw(image), width, height, unit, "", request.prompt)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=3)
        return GeneratedImage(
            content=buffer.getvalue(), width=width, height=height, model=self.model
        )


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, max(0.0, min(1.0, s)), max(0.0, min(1.0, v)))
    return int(r * 255), int(g * 255), int(b * 255)


def render_scene(
    prompt: str, seed: int, width: int, height: int, caption: str = "", without=frozenset()
) -> Image.Image:
    """Return a composed scene for the prompt; deterministic in (prompt, seed, size). The
    themes named in `without` are not drawn (the page's own characters stand in for them)."""
    digest = hashlib.sha256(f"{seed}:{prompt}".encode()).digest()
    rng = random.Random(digest)
    words = words_of(prompt)
    themes = {name for name, keys in THEMES.items() if words & keys} - set(without)
    night = "night" in themes
    rain = "rain" in themes

    base_hue = digest[0] / 255
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    horizon = int(height * rng.uniform(0.48, 0.62))
    unit = min(width, height) / 100

    # Sky: a vertical gradient whose hue comes from the prompt.
    sky_top = _rgb(
        0.62 if night else 0.55 + base_hue * 0.1, 0.7 if night else 0.45, 0.25 if night else 0.95
    )
    sky_bottom = _rgb(
        0.7 if night else base_hue,
        0.5 if night else 0.25,
        0.45 if night else (0.75 if rain else 1.0),
    )
    for y in range(height):
        t = min(1.0, y / max(1, horizon - 1))
        color = tuple(int(a + (b - a) * t) for a, b in zip(sky_top, sky_bottom, strict=True))
        draw.line([(0, y), (width, y)], fill=color)

    # Sun or moon, and stars at night.
    cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.1, 0.3) * height
    r = unit * rng.uniform(6, 10)
    if night:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(245, 240, 210))
        for _ in range(40):
            sx, sy = rng.uniform(0, width), rng.uniform(0, horizon * 0.8)
            draw.ellipse([sx - 2, sy - 2, sx + 2, sy + 2], fill=(255, 255, 230))
    elif not rain:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 214, 90))
    else:
        for _ in range(5):
            x0, y0 = rng.uniform(-0.1, 0.9) * width, rng.uniform(0.05, 0.3) * height
            draw.ellipse([x0, y0, x0 + unit * 30, y0 + unit * 10], fill=(150, 155, 170))

    # Rolling hills in three layers, each a little darker and nearer.
    ground_hue = 0.25 + (digest[1] / 255 - 0.5) * 0.15
    for layer in range(3):
        level = horizon + layer * (height - horizon) / 4
        amp = unit * rng.uniform(3, 9)
        phase, freq = rng.uniform(0, 6.28), rng.uniform(1.0, 2.5)
        points = [(0, height)]
        for i in range(0, 41):
            x = width * i / 40
            points.append((x, level - amp * math.sin(phase + freq * 6.28 * i / 40)))
        points.append((width, height))
        value = (0.55 if night else 0.75) - layer * 0.12
        draw.polygon(points, fill=_rgb(ground_hue, 0.55, value))

    if "water" in themes:
        wx = rng.uniform(0.1, 0.5) * width
        wy = horizon + (height - horizon) * 0.45
        draw.ellipse([wx, wy, wx + unit * 40, wy + unit * 12], fill=_rgb(0.57, 0.5, 0.8))
        draw.arc(
            [wx + unit * 5, wy + unit * 3, wx + unit * 30, wy + unit * 9],
            200,
            340,
            fill=(230, 240, 255),
            width=max(1, int(unit / 2)),
        )

    if "house" in themes:
        hx = rng.uniform(0.55, 0.75) * width
        hy = horizon + unit * 4
        wall = _rgb(0.08 + base_hue * 0.1, 0.35, 0.85)
        draw.rectangle([hx, hy - unit * 18, hx + unit * 22, hy], fill=wall)
        draw.polygon(
            [
                (hx - unit * 3, hy - unit * 18),
                (hx + unit * 11, hy - unit * 30),
                (hx + unit * 25, hy - unit * 18),
            ],
            fill=_rgb(0.02, 0.6, 0.55),
        )
        draw.rectangle([hx + unit * 9, hy - unit * 10, hx + unit * 14, hy], fill=(90, 60, 40))
        light = (255, 220, 120) if night else (200, 225, 240)
        draw.rectangle([hx + unit * 2, hy - unit * 14, hx + unit * 7, hy - unit * 9], fill=light)

    trees = rng.randint(3, 6) if "tree" in themes else rng.randint(0, 2)
    for _ in range(trees):
        tx = rng.uniform(0.02, 0.98) * width
        ty = horizon + rng.uniform(0.0, 0.25) * (height - horizon)
        size = unit * rng.uniform(6, 12)
        draw.rectangle(
            [tx - size * 0.15, ty - size, tx + size * 0.15, ty + size * 0.4], fill=(95, 65, 40)
        )
        leaf = _rgb(0.28 + rng.uniform(-0.05, 0.05), 0.6, 0.45 if night else 0.6)
        draw.ellipse([tx - size, ty - size * 2.4, tx + size, ty - size * 0.6], fill=leaf)

    if "fence" in themes:
        fy = horizon + (height - horizon) * 0.3
        draw.rectangle([0, fy - unit * 1, width, fy], fill=(150, 110, 70))
        for i in range(0, int(width / (unit * 6)) + 1):
            px = i * unit * 6
            draw.rectangle([px, fy - unit * 7, px + unit * 1.5, fy + unit * 3], fill=(170, 125, 80))

    if "veg" in themes:
        for _ in range(rng.randint(8, 16)):
            vx = rng.uniform(0.05, 0.95) * width
            vy = rng.uniform(0.6, 0.95) * height
            vr = unit * rng.uniform(2, 4)
            draw.ellipse(
                [vx - vr, vy - vr, vx + vr, vy + vr],
                fill=_rgb(0.3 + rng.uniform(-0.06, 0.06), 0.7, 0.7),
            )
            draw.ellipse(
                [vx - vr / 2, vy - vr / 2, vx + vr / 2, vy + vr / 2], fill=_rgb(0.3, 0.5, 0.85)
            )

    if "person" in themes:
        px = rng.uniform(0.6, 0.85) * width
        py = height * 0.82
        draw.rectangle([px - unit * 4, py - unit * 20, px + unit * 4, py], fill=(70, 90, 140))
        draw.ellipse(
            [px - unit * 4, py - unit * 29, px + unit * 4, py - unit * 21], fill=(235, 195, 160)
        )
        draw.polygon(
            [
                (px - unit * 6, py - unit * 27),
                (px, py - unit * 33),
                (px + unit * 6, py - unit * 27),
            ],
            fill=(120, 90, 50),
        )

    if "rabbit" in themes:
        rx = rng.uniform(0.2, 0.55) * width
        ry = height * rng.uniform(0.75, 0.88)
        fur = (150, 120, 95)
        draw.ellipse([rx - unit * 8, ry - unit * 7, rx + unit * 8, ry + unit * 5], fill=fur)
        draw.ellipse([rx + unit * 4, ry - unit * 13, rx + unit * 12, ry - unit * 5], fill=fur)
        draw.ellipse([rx + unit * 5, ry - unit * 24, rx + unit * 7.5, ry - unit * 11], fill=fur)
        draw.ellipse([rx + unit * 8.5, ry - unit * 24, rx + unit * 11, ry - unit * 11], fill=fur)
        draw.ellipse([rx - unit * 10, ry - unit * 4, rx - unit * 6, ry], fill=(250, 250, 250))
        draw.ellipse(
            [rx + unit * 9, ry - unit * 10.5, rx + unit * 10.5, ry - unit * 9], fill=(20, 20, 20)
        )
        if words & {"jacket", "coat", "blue"}:
            draw.rectangle(
                [rx - unit * 4, ry - unit * 6, rx + unit * 4, ry + unit * 2], fill=(40, 80, 170)
            )

    if "bird" in themes:
        for _ in range(rng.randint(2, 4)):
            bx, by = rng.uniform(0.1, 0.9) * width, rng.uniform(0.15, 0.4) * height
            draw.arc(
                [bx, by, bx + unit * 5, by + unit * 3],
                200,
                340,
                fill=(40, 40, 50),
                width=int(unit / 2) + 1,
            )
            draw.arc(
                [bx + unit * 5, by, bx + unit * 10, by + unit * 3],
                200,
                340,
                fill=(40, 40, 50),
                width=int(unit / 2) + 1,
            )

    # Words no theme knew still shape the picture: one soft shape per leftover word.
    known = set().union(*THEMES.values())
    for word in sorted(words - known)[:8]:
        h = int(hashlib.md5(word.encode()).hexdigest()[:8], 16)
        x, y = (h % 997) / 997 * width, horizon * 0.35 + ((h // 997) % 991) / 991 * horizon * 0.55
        s = unit * (2 + h % 4)
        draw.ellipse(
            [x - s, y - s, x + s, y + s],
            outline=_rgb(h / 2**32, 0.4, 1.0),
            width=max(1, int(unit / 3)),
        )

    if rain:
        for _ in range(120):
            x, y = rng.uniform(0, width), rng.uniform(0, height)
            draw.line([(x, y), (x - unit, y + unit * 3)], fill=(200, 210, 230), width=1)

    _draw_caption(draw, width, height, unit, caption, prompt)
    return image


def _draw_caption(
    draw: ImageDraw.ImageDraw, width: int, height: int, unit: float, caption: str, prompt: str
) -> None:
    """Mark the picture as a draft: a page badge top-left and the prompt's opening words."""
    font = ImageFont.load_default(size=max(10, int(unit * 4)))
    small = ImageFont.load_default(size=max(8, int(unit * 2.6)))
    if caption:
        pad = unit * 2
        box = draw.textbbox((pad * 2, pad * 2), caption, font=font)
        draw.rounded_rectangle(
            [box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad],
            radius=pad,
            fill=(255, 255, 255),
        )
        draw.text((pad * 2, pad * 2), caption, fill=(30, 30, 40), font=font)
    line = " ".join(prompt.split())
    if len(line) > 70:
        line = line[:67].rstrip() + "…"
    strip = unit * 6
    draw.rectangle([0, height - strip, width, height], fill=(255, 255, 255))
    draw.text(
        (unit * 2, height - strip + unit * 1.5), f"Draft · {line}", fill=(60, 60, 70), font=small
    )
