"""Manuscripts: plain text in which a line holding only `---` separates pages."""

import re

PAGE_BREAK = re.compile(r"^[ \t]*---[ \t]*$", re.MULTILINE)


def split_pages(text: str) -> list[str]:
    """Return the manuscript's page texts, stripped, with empty pages dropped."""
    normalized = text.replace("\r\n", "\n").replace("\r", "\n")
    return [part.strip() for part in PAGE_BREAK.split(normalized) if part.strip()]
