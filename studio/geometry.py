"""The printed book's geometry, the one description the book preview, the PDFs, the cover
and the EPUB are drawn from: the trim, the bleed, the margins and the safe area, and where
each printed page (a sheet) puts its picture and its text.

Lengths are in points (1/72 inch), measured from a sheet's top-left corner, the way the
preview's SVG reads them; `Box.pdf` turns a box into PDF's bottom-left coordinates.

Printed page 1 is the title page, a right-hand page (recto); spreads pair 2–3, 4–5, …, so
even pages are left-hand (verso). A book whose trim is square or nearly (height under 1.2
× width) gives each of its pages a spread: the picture on the left-hand page, edge to edge,
and the text facing it. A taller trim holds both on one page: the picture across the top,
the text beneath. A printed book has an even number of pages: a blank one ends it if need
be.

Bleed follows print-on-demand services (KDP): a sheet is the trim plus 0.125 in on the
outside edge and 0.25 in on its height (0.125 in at the top and the bottom); nothing bleeds
into the gutter. Pictures run into the bleed; text stays 0.25 in inside the trim, and
further from the gutter, whose width grows with the page count.
"""

import re
from dataclasses import dataclass
from decimal import Decimal

INCH = 72.0
MM = INCH / 25.4
BLEED = 0.125 * INCH
SAFE = 0.25 * INCH  # no text nearer the trim than this (KDP's outside margin)
# Text sits well inside the safe area, for the eye rather than for the printer.
TEXT_MARGIN = 0.5 * INCH
FACING_TEXT_MARGIN = 0.75 * INCH
FOLIO_RISE = 0.36 * INCH  # the page number's baseline, above the trim's bottom edge
PICTURE_SHARE = 0.68  # of the trim's height, at most, for a picture above its text
PRINT_DPI = 300  # what printers ask of a picture at its printed size

# KDP's inside margin for a page count (up to and including), in inches.
GUTTERS = ((150, 0.375), (300, 0.5), (500, 0.625), (700, 0.75))
WIDEST_GUTTER = 0.875

# Paper thickness per page (inches), for the spine (KDP's figures).
PAPERS = {
    "white": Decimal("0.002252"),
    "cream": Decimal("0.0025"),
    "premium": Decimal("0.002347"),
}
PAPER_LABELS = {
    "white": "White paper (0.002252 in a page)",
    "cream": "Cream paper (0.0025 in a page)",
    "premium": "Premium colour (0.002347 in a page)",
}
SPINE_TEXT_FROM = 79  # pages: a thinner spine carries no text (KDP)

# Custom trims: what print-on-demand services print, give or take.
SMALLEST_SIDE, LARGEST_SIDE = 4.0, 14.0


@dataclass(frozen=True)
class Trim:
    """The finished page's size, as chosen for a project: a preset or WxH in inches."""

    key: str
    width_in: float
    height_in: float
    label: str

    @property
    def width(self) -> float:
        return self.width_in * INCH

    @property
    def height(self) -> float:
        return self.height_in * INCH

    @property
    def facing(self) -> bool:
        """Whether a book page is a spread (picture, then text facing it)."""
        return self.height_in < 1.2 * self.width_in


def _preset(key: str, width: float, height: float, label: str) -> Trim:
    return Trim(key, width, height, label)


PRESETS = {
    trim.key: trim
    for trim in (
        _preset("8.5x8.5", 8.5, 8.5, "8.5 × 8.5 in"),
        _preset("8x10", 8, 10, "8 × 10 in"),
        _preset("8.5x11", 8.5, 11, "8.5 × 11 in"),
        _preset("8.25x8.25", 8.25, 8.25, "8.25 × 8.25 in"),
        _preset("a4", 210 / 25.4, 297 / 25.4, "A4 (210 × 297 mm)"),
    )
}
DEFAULT_TRIM = "8.5x8.5"
CUSTOM = re.compile(r"^\s*(\d{1,2}(?:\.\d{1,3})?)\s*[x×]\s*(\d{1,2}(?:\.\d{1,3})?)\s*(?:in)?\s*$")
TRIM_HELP = (
    f"One of {', '.join(PRESETS)}, or a custom size in inches written WxH (e.g. 7x9), "
    f"each side from {SMALLEST_SIDE:g} to {LARGEST_SIDE:g} in."
)


def parse_trim(value: str) -> Trim:
    """Return the trim a preset name or WxH (inches) names; ValueError saying what is
    accepted otherwise."""
    key = (value or "").strip().lower()
    if key in PRESETS:
        return PRESETS[key]
    match = CUSTOM.match(key)
    if not match:
        raise ValueError(f"trim must be {TRIM_HELP[0].lower()}{TRIM_HELP[1:]}")
    width, height = float(match[1]), float(match[2])
    for side in (width, height):
        if not SMALLEST_SIDE <= side <= LARGEST_SIDE:
            raise ValueError(
                f"a custom trim's sides must be from {SMALLEST_SIDE:g} to {LARGEST_SIDE:g} "
                f"inches, not {side:g}"
            )
    key = f"{width:g}x{height:g}"
    return PRESETS.get(key) or Trim(key, width, height, f"{width:g} × {height:g} in (custom)")


def validate_trim(value: str) -> None:
    """A model field's validator: the trim must be a preset or WxH."""
    from django.core.exceptions import ValidationError

    try:
        parse_trim(value)
    except ValueError as error:
        raise ValidationError(str(error)) from None


def trim_choices(*also: str) -> list[tuple[str, str]]:
    """Return the presets as choices, and the custom trims `also` names (once each)."""
    choices = [(trim.key, trim.label) for trim in PRESETS.values()]
    for value in also:
        trim = parse_trim(value)
        if (trim.key, trim.label) not in choices:
            choices.append((trim.key, trim.label))
    return choices


def gutter(pages: int) -> float:
    """Return the inside margin for a book of `pages` printed pages (points)."""
    for most, inches in GUTTERS:
        if pages <= most:
            return inches * INCH
    return WIDEST_GUTTER * INCH


def spine_width(pages: int, paper: str) -> float:
    """Return the spine's width in points for `pages` printed pages on `paper`."""
    return float(PAPERS[paper] * pages) * INCH


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.x + self.width

    @property
    def bottom(self) -> float:
        return self.y + self.height

    def inset(self, *, left=0.0, top=0.0, right=0.0, bottom=0.0) -> "Box":
        return Box(
            self.x + left, self.y + top, self.width - left - right, self.height - top - bottom
        )

    def pdf(self, sheet_height: float) -> tuple[float, float, float, float]:
        """Return the box as PDF's [x0 y0 x1 y1], from the sheet's bottom-left corner."""
        return (self.x, sheet_height - self.bottom, self.right, sheet_height - self.y)

    def dpi(self, pixels: tuple[int, int]) -> int:
        """Return the effective resolution of a picture of `pixels` filling the box (cropped
        to it, never squashed): the fewer pixels per printed inch of its two sides."""
        width, height = pixels
        return int(min(width / (self.width / INCH), height / (self.height / INCH)))


class Role:
    TITLE = "title"
    PICTURE = "picture"  # a picture alone, edge to edge
    TEXT = "text"  # the text facing its picture
    BOTH = "both"  # the picture across the top, the text beneath
    BLANK = "blank"


@dataclass(frozen=True)
class Sheet:
    """One printed page: where its trim, safe area, picture and text lie on the sheet."""

    number: int  # the printed page number (1: the title page, a recto)
    role: str
    index: int | None  # the book page it shows (0-based, in page order), if any
    width: float  # the sheet with its bleed
    height: float
    trim: Box
    safe: Box
    picture: Box | None
    text: Box | None

    @property
    def recto(self) -> bool:
        return self.number % 2 == 1

    @property
    def side(self) -> str:
        return "right" if self.recto else "left"

    @property
    def bleed(self) -> Box:
        return Box(0, 0, self.width, self.height)

    @property
    def folio_y(self) -> float | None:
        """The page number's baseline, on pages with text; None on others."""
        if self.role in (Role.TEXT, Role.BOTH):
            return self.trim.bottom - FOLIO_RISE
        return None

    @property
    def folio_x(self) -> float:
        return self.trim.x + self.trim.width / 2


@dataclass(frozen=True)
class Book:
    """The printed pages of a book of `pages` pages at a trim, with or without bleed."""

    trim: Trim
    pages: int
    bleed: bool = True

    @property
    def sheet_count(self) -> int:
        if self.pages == 0:
            return 1  # the title page alone: there is nothing else to print
        content = 2 * self.pages if self.trim.facing else self.pages
        return 1 + content + (content % 2 == 0)  # even in all: a blank page ends it if need be

    @property
    def spread_count(self) -> int:
        return 1 + self.sheet_count // 2

    @property
    def gutter(self) -> float:
        return gutter(self.sheet_count)

    def spread(self, number: int) -> tuple[int | None, int | None]:
        """Return the printed page numbers on spread `number` (left, right); None: nothing
        faces there (before the title page, after the last page)."""
        if not 1 <= number <= self.spread_count:
            raise ValueError(f"spread must be a number from 1 to {self.spread_count}")
        left, right = 2 * number - 2, 2 * number - 1
        return (left or None, right if right <= self.sheet_count else None)

    def spread_of_page(self, index: int) -> int:
        """Return the spread that shows book page `index` (0-based)."""
        return 1 + self.first_sheet(index) // 2

    def first_sheet(self, index: int) -> int:
        return 2 + 2 * index if self.trim.facing else 2 + index

    def role_of(self, number: int) -> tuple[str, int | None]:
        if number == 1:
            return Role.TITLE, None
        offset = number - 2
        if self.trim.facing:
            index, text = divmod(offset, 2)
            if index < self.pages:
                return (Role.TEXT if text else Role.PICTURE), index
        elif offset < self.pages:
            return Role.BOTH, offset
        return Role.BLANK, None

    def sheet(self, number: int) -> Sheet:
        """Return printed page `number` (1-based)."""
        if not 1 <= number <= self.sheet_count:
            raise ValueError(f"page must be a number from 1 to {self.sheet_count}")
        role, index = self.role_of(number)
        bleed = BLEED if self.bleed else 0.0
        width, height = self.trim.width + bleed, self.trim.height + 2 * bleed
        recto = number % 2 == 1
        trim = Box(0 if recto else bleed, bleed, self.trim.width, self.trim.height)
        gutter = self.gutter

        def margins(edge: float, gutter_edge: float, top: float, bottom: float) -> Box:
            left, right = (gutter_edge, edge) if recto else (edge, gutter_edge)
            return trim.inset(left=left, right=right, top=top, bottom=bottom)

        safe = margins(SAFE, gutter, SAFE, SAFE)
        picture = text = None
        if role == Role.PICTURE:
            picture = Box(0, 0, width, height)
        elif role == Role.BOTH:
            tall = min(self.trim.width, self.trim.height * PICTURE_SHARE)
            picture = Box(0, 0, width, bleed + tall)
            text = margins(TEXT_MARGIN, gutter + SAFE, tall + SAFE, FOLIO_RISE + SAFE)
        elif role in (Role.TEXT, Role.TITLE):
            text = margins(
                FACING_TEXT_MARGIN,
                gutter + FACING_TEXT_MARGIN / 2,
                FACING_TEXT_MARGIN,
                FACING_TEXT_MARGIN,
            )
        return Sheet(number, role, index, width, height, trim, safe, picture, text)

    def sheets(self):
        for number in range(1, self.sheet_count + 1):
            yield self.sheet(number)


@dataclass(frozen=True)
class Cover:
    """The wraparound cover: back, spine and front side by side, 0.125 in bleed on every
    edge; the spine as wide as the interior's pages on the chosen paper."""

    trim: Trim
    pages: int  # printed interior pages
    paper: str

    @property
    def spine(self) -> float:
        return spine_width(self.pages, self.paper)

    @property
    def width(self) -> float:
        return 2 * self.trim.width + self.spine + 2 * BLEED

    @property
    def height(self) -> float:
        return self.trim.height + 2 * BLEED

    @property
    def trim_box(self) -> Box:
        return Box(BLEED, BLEED, self.width - 2 * BLEED, self.trim.height)

    @property
    def back(self) -> Box:
        """The back panel with its bleed (left, top, bottom)."""
        return Box(0, 0, BLEED + self.trim.width, self.height)

    @property
    def spine_box(self) -> Box:
        return Box(BLEED + self.trim.width, 0, self.spine, self.height)

    @property
    def front(self) -> Box:
        """The front panel with its bleed (right, top, bottom)."""
        return Box(self.spine_box.right, 0, self.trim.width + BLEED, self.height)

    @property
    def front_safe(self) -> Box:
        return Box(
            self.spine_box.right + SAFE,
            BLEED + SAFE,
            self.trim.width - 2 * SAFE,
            self.trim.height - 2 * SAFE,
        )

    @property
    def spine_text(self) -> bool:
        return self.pages >= SPINE_TEXT_FROM
