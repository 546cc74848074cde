"""Manuscripts: UTF-8 text in which a line holding only `---` separates pages."""

import re

PAGE_BREAK = re.compile(r"^[ \t]*---[ \t]*$", re.MULTILINE)
MAX_PAGES = 300
MAX_PAGE_CHARS = 5000
MAX_FILE_BYTES = 2 * 1024 * 1024


class ManuscriptError(ValueError):
    """A manuscript the studio will not import; the message says why, for the editor."""


def split_pages(text: str) -> list[str]:
    """Return the manuscript's page texts, stripped, with empty pages dropped."""
    normalized = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return [part.strip() for part in PAGE_BREAK.split(normalized) if part.strip()]


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


def parse_manuscript(text: str) -> list[str]:
    """Return the page texts of a manuscript within the studio's limits, or raise
    ManuscriptError naming the first limit it breaks."""
    if len(text.encode("utf-8", errors="replace")) > MAX_FILE_BYTES:
        raise ManuscriptError("The manuscript is longer than 2 MB.")
    pages = split_pages(text)
    if not pages:
        raise ManuscriptError("The manuscript has no text.")
    if len(pages) > MAX_PAGES:
        raise ManuscriptError(
            f"The manuscript has {len(pages)} pages; a project can have at most {MAX_PAGES}."
        )
    for number, page in enumerate(pages, 1):
        if len(page) > MAX_PAGE_CHARS:
            raise ManuscriptError(
                f"Page {number} has {len(page):,} characters; a page can have at most "
                f"{MAX_PAGE_CHARS:,}."
            )
    return pages
