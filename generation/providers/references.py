"""Reference pictures on their way to a service (issue 18): downscaled to the service's
limit and encoded in a format it takes, named in the prompt in order, or composed into one
labelled sheet for a model that takes a single input picture.

Nothing here talks HTTP; each provider sends what these helpers return its service's way.
"""

import base64
import io
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from .base import MAX_IMAGE_PIXELS, ImageRequest, Reference, Transient

# The formats every service here takes for an input picture (OpenAI edits, Gemini, the
# chat gateways, Replicate and fal all take PNG, JPEG and WebP); anything else is redrawn
# as PNG before it is sent.
MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
ORDINALS = (
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
    "eleventh",
    "twelfth",
    "thirteenth",
    "fourteenth",
    "fifteenth",
    "sixteenth",
)


@dataclass(frozen=True)
class Picture:
    """A reference picture as it is sent: its bytes, MIME type and file name."""

    content: bytes
    mime_type: str
    filename: str
    width: int
    height: int

    def data_url(self) -> str:
        return f"data:{self.mime_type};base64," + base64.b64encode(self.content).decode()

    def base64(self) -> str:
        return base64.b64encode(self.content).decode()


def _open(content: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(content))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise Transient(
                f"A reference picture is too large ({image.width}x{image.height}).", sent=False
            )
        image.load()
    except Image.DecompressionBombError as exc:
        raise Transient(f"A reference picture is a decompression bomb: {exc}", sent=False) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise Transient(f"A reference picture is not a valid image: {exc}", sent=False) from exc
    return image


def prepare(content: bytes, *, max_side: int, name: str = "reference") -> Picture:
    """Return a reference picture no larger than max_side on its longer side (aspect kept),
    in its own format when the services take it (PNG, JPEG, WebP), else as PNG."""
    image = _open(content)
    kind = image.format if image.format in MIME_TYPES else "PNG"
    if max(image.size) <= max_side and kind == image.format:
        return Picture(content, MIME_TYPES[kind], _filename(name, kind), image.width, image.height)
    image = ImageOps.exif_transpose(image)
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    if kind == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    elif image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA")
    buffer = io.BytesIO()
    options = {"quality": 90} if kind in ("JPEG", "WEBP") else {"compress_level": 6}
    image.save(buffer, format=kind, **options)
    return Picture(
        buffer.getvalue(), MIME_TYPES[kind], _filename(name, kind), image.width, image.height
    )


def _filename(name: str, kind: str) -> str:
    stem = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "reference"
    return f"{stem}.{'jpg' if kind == 'JPEG' else kind.lower()}"


def prepared(
    request: ImageRequest, *, limit: int, max_side: int, max_total: int | None = None
) -> list[tuple[Reference, Picture]]:
    """Return the request's first `limit` references with their pictures as sent; with
    max_total, made smaller until all of them weigh no more than that together."""
    while True:
        pictures = [
            (reference, prepare(reference.content, max_side=max_side, name=reference.name))
            for reference in request.references[: max(0, limit)]
        ]
        total = sum(len(picture.content) for _, picture in pictures)
        if max_total is None or total <= max_total or max_side <= 256:
            return pictures
        max_side = max_side * 3 // 4


def what_it_shows(reference: Reference) -> str:
    """Return how the prompt names what a reference picture shows: "Peter: a small rabbit
    in a blue jacket", or "the book's style: …" for the style reference."""
    subject = "the book's style" if reference.kind == "style" else reference.name
    description = " ".join(reference.description.split())
    return f"{subject}: {description}" if description else subject


def ordinal(index: int) -> str:
    return ORDINALS[index] if index < len(ORDINALS) else f"number {index + 1}"


def named_prompt(prompt: str, references) -> str:
    """Return the prompt preceded by one sentence per picture, in the order they are sent:
    "The first picture shows Peter: a small rabbit in a blue jacket. The second …"."""
    if not references:
        return prompt
    lines = [
        f"The {ordinal(n)} picture shows {what_it_shows(reference).rstrip('.')}."
        for n, reference in enumerate(references)
    ]
    lines.append(KEEP_THEM)
    return " ".join(lines) + "\n\n" + prompt


KEEP_THEM = "Keep each of them exactly as in its picture (species, colours, clothes, style)."


def introduction(index: int, reference: Reference) -> str:
    """Return the text part that introduces one inline reference picture."""
    return f"Picture {index + 1} shows {what_it_shows(reference).rstrip('.')}."


def compose_sheet(references, *, max_side: int, max_bytes: int | None = None) -> Picture:
    """Return one picture of the references side by side, each labelled with its name
    underneath, for a model that takes a single input picture: no longer than max_side,
    and, with max_bytes, a JPEG made smaller until it weighs no more than that."""
    cell = 512
    label = 56
    pad = 16
    tiles = []
    for reference in references:
        image = ImageOps.exif_transpose(_open(reference.content)).convert("RGB")
        image.thumbnail((cell, cell), Image.Resampling.LANCZOS)
        tiles.append((reference, image))
    width = pad + len(tiles) * (cell + pad)
    height = pad + cell + label + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=36)
    for n, (reference, image) in enumerate(tiles):
        left = pad + n * (cell + pad)
        sheet.paste(image, (left + (cell - image.width) // 2, pad + (cell - image.height) // 2))
        name = "Style" if reference.kind == "style" else reference.name
        box = draw.textbbox((0, 0), name, font=font)
        draw.text(
            (left + (cell - (box[2] - box[0])) // 2, pad + cell + 8),
            name,
            fill=(20, 20, 30),
            font=font,
        )
    if max_bytes is None:
        buffer = io.BytesIO()
        sheet.save(buffer, format="PNG")
        return prepare(buffer.getvalue(), max_side=max_side, name="references")
    side = max_side
    while True:
        copy = sheet.copy()
        copy.thumbnail((side, side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        copy.save(buffer, format="JPEG", quality=88)
        if buffer.tell() <= max_bytes or side <= 256:
            return Picture(
                buffer.getvalue(), "image/jpeg", "references.jpg", copy.width, copy.height
            )
        side = int(side * 0.8)


def sheet_prompt(prompt: str, references) -> str:
    """Return the prompt for a model given one composed sheet: it names each labelled
    picture on the sheet, left to right."""
    if not references:
        return prompt
    names = "; ".join(what_it_shows(r).rstrip(".") for r in references)
    return (
        f"The input picture is a reference sheet, labelled left to right: {names}. "
        f"{KEEP_THEM}\n\n{prompt}"
    )
