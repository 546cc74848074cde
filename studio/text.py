"""Words for the messages editors and operators read, and the cleaning of text that
arrives from elsewhere."""

from django.template.defaultfilters import pluralize

MB = 1024 * 1024


def megabytes(size: int) -> str:
    """Return a limit in words: "10 MB" (limits are whole megabytes)."""
    return f"{size / MB:,.0f} MB"


def size_over(size: int, limit: int) -> str:
    """Return the size of something refused for being over the limit: "21.6 MB", or "just
    over 2 MB" when one decimal would not show the difference."""
    shown = f"{size / MB:,.1f} MB"
    return shown if round(size / MB, 1) > limit / MB else f"just over {megabytes(limit)}"


def plural(count: int, word: str) -> str:
    """Return "1 page", "2 pages": the count with its word."""
    return f"{count} {word}{pluralize(count)}"


# C0 control characters but tab and newline: NUL breaks PostgreSQL's text columns, and
# none of them is anything an editor typed on purpose.
CONTROL_CHARACTERS = dict.fromkeys(c for c in range(32) if chr(c) not in "\t\n")


def clean_page_text(text: str, limit: int) -> str:
    """Return text as a page may hold it: newlines normalized, control characters (NUL
    among them) removed, stripped, and cut to `limit` characters, ending on "…" if cut."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(CONTROL_CHARACTERS).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text
