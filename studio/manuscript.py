"""Manuscripts: UTF-8 text (or UTF-16 with a byte order mark) in which a line holding only
`---` separates pages.

A page may open with a section heading, a line `## Chapter 1`: that page and the ones after
it belong to the section "Chapter 1" until the next heading. A heading may also stand on
its own between two `---` lines. Blank lines inside a page are paragraph breaks and are kept.
"""

import codecs
from typing import NamedTuple

from .models import MAX_PAGE_CHARS, MAX_PAGES
from .text import megabytes, size_over

# Manuscripts are parsed with plain string operations, never regular expressions: a pattern
# that backtracks takes minutes on one long line of spaces (issue 30, item 2).
MAX_SECTION_CHARS = 80
# Longer than any page may be, so a long page is told its own limit first.
MAX_LINE_CHARS = 2 * MAX_PAGE_CHARS
MAX_FILE_BYTES = 2 * 1024 * 1024


class ManuscriptError(ValueError):
    """A manuscript the studio will not import; the message says why, for the editor."""


def _lines(text: str) -> list[str]:
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")


def split_pages(text: str) -> list[str]:
    """Return the manuscript's page texts, stripped, with empty pages dropped."""
    pages, lines = [], []
    for line in [*_lines(text), "---"]:
        if line.strip(" \t") == "---":
            page = "\n".join(lines).strip()
            if page:
                pages.append(page)
            lines = []
        else:
            lines.append(line)
    return pages


def section_heading(line: str) -> str | None:
    """Return the section a line `## Chapter 1` names ("Chapter 1"; closing #s and spaces
    dropped), or None if the line is not a heading. Linear in the line's length."""
    rest = line.lstrip(" \t")
    if not rest.startswith("##"):
        return None
    name = rest[2:].lstrip(" \t")
    if len(name) == len(rest) - 2 or not name or name[0].isspace():
        return None  # "##" must be followed by spaces or tabs, then the name
    end = len(name.rstrip(" \t").rstrip("#").rstrip(" \t"))
    return name[: max(end, 1)]


class ManuscriptPage(NamedTuple):
    text: str
    section: str = ""


def split_sections(text: str) -> list[ManuscriptPage]:
    """Return the manuscript's pages with the section each belongs to ("" before any
    heading). Headings are taken out of the page text; empty pages are dropped."""
    pages, section = [], ""
    for part in split_pages(text):
        lines, first = part.split("\n"), 0  # an index, not slices: slicing is quadratic
        while first < len(lines) and (heading := section_heading(lines[first])) is not None:
            section = heading
            first += 1
            while first < len(lines) and not lines[first].strip():
                first += 1
        body = "\n".join(lines[first:]).strip()
        if body:
            pages.append(ManuscriptPage(text=body, section=section))
    return pages


# What a word processor's "Unicode text" starts with: UTF-16 says its byte order first.
UTF16_MARKS = {codecs.BOM_UTF16_LE: "utf-16-le", codecs.BOM_UTF16_BE: "utf-16-be"}
# Control characters no text has (tab, line and page breaks are text); in a file that
# decodes, they mean a picture or a document format, not a manuscript.
NOT_TEXT = {chr(n) for n in range(32) if chr(n) not in "\t\n\v\f\r"} | {"\x7f"}


def decode_manuscript(data: bytes, *, size: int | None = None) -> str:
    """Return the text of an uploaded file: UTF-8 (with or without a byte order mark) or
    UTF-16 with one (little- or big-endian, as Windows' "Unicode text" saves it). Raise
    ManuscriptError if it is none of them, or binary. `size` is the file's whole size when
    only its start was read (enough to refuse it)."""
    size = len(data) if size is None else size
    if max(size, len(data)) > MAX_FILE_BYTES:
        raise ManuscriptError(
            f"The file is {size_over(max(size, len(data)), MAX_FILE_BYTES)}; a manuscript can "
            "be at most "
            f"{megabytes(MAX_FILE_BYTES)}."
        )
    not_text = ManuscriptError(
        "This file is not text. Upload a .txt or .md file saved as UTF-8 or UTF-16."
    )
    encoding = UTF16_MARKS.get(data[:2], "utf-8")
    if encoding == "utf-8" and b"\x00" in data:
        raise not_text
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        found = "not UTF-8 text" if encoding == "utf-8" else "UTF-16 text that breaks off"
        raise ManuscriptError(
            f"This file is {found}. Save it as UTF-8 (.txt or .md) and upload it again."
        ) from None
    text = text.removeprefix("\ufeff")
    if not NOT_TEXT.isdisjoint(text):
        raise not_text
    return text


def parse_manuscript(text: str) -> list[ManuscriptPage]:
    """Return the pages (text and section) of a manuscript within the studio's limits, or
    raise ManuscriptError naming the first limit it breaks."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_FILE_BYTES:
        raise ManuscriptError(
            f"The manuscript is {size_over(size, MAX_FILE_BYTES)}; a manuscript can be at most "
            f"{megabytes(MAX_FILE_BYTES)}."
        )
    for number, line in enumerate(_lines(text), 1):
        if len(line) > MAX_LINE_CHARS:
            raise ManuscriptError(
                f"Line {number:,} has {len(line):,} characters; a line can have at most "
                f"{MAX_LINE_CHARS:,}. Break it into paragraphs or pages."
            )
    pages = split_sections(text)
    if not pages:
        raise ManuscriptError("The manuscript has no text.")
    if len(pages) > MAX_PAGES:
        raise ManuscriptError(
            f"The manuscript has {len(pages):,} pages; a project can have at most {MAX_PAGES:,}."
        )
    for number, page in enumerate(pages, 1):
        if len(page.text) > MAX_PAGE_CHARS:
            raise ManuscriptError(
                f"Page {number} has {len(page.text):,} characters; a page can have at most "
                f"{MAX_PAGE_CHARS:,}."
            )
        if len(page.section) > MAX_SECTION_CHARS:
            raise ManuscriptError(
                f"The section heading before page {number} has {len(page.section)} "
                f"characters; a section name can have at most {MAX_SECTION_CHARS}."
            )
    return pages
