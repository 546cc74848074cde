"""The book's text set in lines: where each line's baseline lies on its sheet, in which face
and size. The PDFs draw these lines and the preview's SVG shows them, so a line breaks at
the same word in both; the face is shipped with the studio (Source Serif Pro, SIL Open Font
License) and embedded in every PDF and EPUB.
"""

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .geometry import Box

FONTS = Path(__file__).resolve().parent.parent / "static" / "studio" / "fonts"
FACES = {
    "regular": ("BookSerif", "SourceSerifPro-Regular.ttf"),
    "bold": ("BookSerif-Bold", "SourceSerifPro-Bold.ttf"),
    "italic": ("BookSerif-Italic", "SourceSerifPro-It.ttf"),
}
TEXT_SIZES = (18, 16, 15, 14, 13, 12, 11, 10, 9, 8)  # points: the largest that fits is used
LEADING = 1.4  # × the size, from baseline to baseline
PARAGRAPH_SPACE = 0.8  # × the size, added between paragraphs
ASCENT = 0.73  # × the size: the face's ascent, from a line's top to its baseline
FOLIO_SIZE = 10
PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")


@cache
def registered() -> bool:
    """Register the book's faces with reportlab (once); they are embedded wherever used."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    for name, file in FACES.values():
        pdfmetrics.registerFont(TTFont(name, str(FONTS / file)))
    return True


def font_name(face: str) -> str:
    registered()
    return FACES[face][0]


def text_width(text: str, face: str, size: float) -> float:
    from reportlab.pdfbase.pdfmetrics import stringWidth

    return stringWidth(text, font_name(face), size)


@dataclass(frozen=True)
class Line:
    x: float  # the line's start
    y: float  # its baseline, from the sheet's top
    text: str
    face: str  # regular, bold, italic
    size: float


@dataclass(frozen=True)
class Setting:
    lines: tuple[Line, ...]
    size: float
    cut: int = 0  # lines that did not fit the box at the smallest size, left out


def paragraphs_of(text: str) -> list[str]:
    """Return the text's paragraphs: blank lines separate them."""
    return [part.strip() for part in PARAGRAPH_BREAK.split(text.strip()) if part.strip()]


def _wrap(paragraph: str, face: str, size: float, width: float) -> list[str]:
    from reportlab.lib.utils import simpleSplit

    lines = []
    for line in paragraph.split("\n"):
        lines.extend(simpleSplit(line.strip(), font_name(face), size, width) or [""])
    return lines


def set_text(
    text: str, box: Box, *, heading: str = "", middle: bool = False, sizes=TEXT_SIZES
) -> Setting:
    """Set the page's text in its box at the largest size that fits, paragraph by paragraph,
    under the section's name when it opens one; in the box's middle (a text page facing its
    picture) or at its top. What does not fit at the smallest size is left out and counted."""
    blocks = [("bold", heading)] if heading else []
    blocks += [("regular", part) for part in paragraphs_of(text)]
    for size in sizes:
        leading, space = size * LEADING, size * PARAGRAPH_SPACE
        wrapped = [(face, _wrap(part, face, size, box.width)) for face, part in blocks]
        needed = sum(len(lines) for _, lines in wrapped) * leading + space * max(
            0, len(wrapped) - 1
        )
        if needed <= box.height or size == sizes[-1]:
            break
    top = box.y + (max(0.0, (box.height - needed) / 2) if middle else 0.0)
    placed, cut, y = [], 0, top
    for number, (face, lines) in enumerate(wrapped):
        if number:
            y += space
        for line in lines:
            if y + size > box.bottom:  # its descenders would leave the box
                cut += 1
                continue
            placed.append(Line(round(box.x, 2), round(y + size * ASCENT, 2), line, face, size))
            y += leading
    return Setting(tuple(placed), size, cut)


def set_title(title: str, author: str, box: Box) -> Setting:
    """Set the title page: the title large and bold, the author beneath in italics, each
    line centred, a third of the way down the box."""
    lines, y = [], box.y + box.height / 3
    for face, text, sizes in (("bold", title, (34, 30, 26, 22, 18)), ("italic", author, (16,))):
        if not text:
            continue
        for size in sizes:
            wrapped = _wrap(text, face, size, box.width)
            if len(wrapped) <= 3:
                break
        for line in wrapped:
            y += size * 1.2
            x = box.x + (box.width - text_width(line, face, size)) / 2
            lines.append(Line(round(x, 2), round(y, 2), line, face, size))
        y += size
    return Setting(tuple(lines), lines[0].size if lines else 0)


def centred(text: str, centre_x: float, y: float, face: str, size: float) -> Line:
    return Line(
        round(centre_x - text_width(text, face, size) / 2, 2), round(y, 2), text, face, size
    )
