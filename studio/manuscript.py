"""Manuscripts: UTF-8 text in which a line holding only `---` separates pages.

A page may open with a section heading, a line `## Chapter 1`: that page and the ones after
it belong to the section "Chapter 1" until the next heading. A heading may also stand on
its own between two `---` lines. Blank lines inside a page are paragraph breaks and are kept.
"""

import re
from typing import NamedTuple

from .models import MAX_PAGES

PAGE_BREAK = re.compile(r"^[ \t]*---[ \t]*$", re.MULTILINE)
SECTION_HEADING = re.compile(r"^[ \t]*##[ \t]+(?P<name>\S.*?)[ \t]*#*[ \t]*$")
MAX_SECTION_CHARS = 80
MAX_PAGE_CHARS = 5000
MAX_FILE_BYTES = 2 * 1024 * 1024


class ManuscriptError(ValueError):
    """A manuscript the studio will not import; the message says why, for the editor."""


def split_pages(text: str) -> list[str]:
    """Return the manuscript's page texts, stripped, with empty pages dropped."""
    normalized = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return [part.strip() for part in PAGE_BREAK.split(normalized) if part.strip()]


class ManuscriptPage(NamedTuple):
    text: str
    section: str = ""


def split_sections(text: str) -> list[ManuscriptPage]:
    """Return the manuscript's pages with the section each belongs to ("" before any
    heading). Headings are taken out of the page text; empty pages are dropped."""
    pages, section = [], ""
    for part in split_pages(text):
        lines = part.split("\n")
        while lines and (heading := SECTION_HEADING.match(lines[0])):
            section = heading["name"]
            lines = lines[1:]
            while lines and not lines[0].strip():
                lines = lines[1:]
        body = "\n".join(lines).strip()
        if body:
            pages.append(ManuscriptPage(text=body, section=section))
    return pages


def decode_manuscript(data: bytes) -> str:
    """Return the text of an uploaded file; raise ManuscriptError if it is not UTF-8 text."""
    if len(data) > MAX_FILE_BYTES:
        raise ManuscriptError(
            f"The file is {len(data) / 1024 / 1024:.1f} MB; a manuscript can be at most 2 MB."
        )
    if b"\x00" in data:
        raise ManuscriptError("This file is not text. Upload a UTF-8 .txt or .md file.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ManuscriptError(
            "This file is not UTF-8 text. Save it as UTF-8 (.txt or .md) and upload it again."
        ) from None


def parse_manuscript(text: str) -> list[ManuscriptPage]:
    """Return the pages (text and section) of a manuscript within the studio's limits, or
    raise ManuscriptError naming the first limit it breaks."""
    if len(text.encode("utf-8", errors="replace")) > MAX_FILE_BYTES:
        raise ManuscriptError("The manuscript is longer than 2 MB.")
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
