"""Words for the messages editors and operators read, and the cleaning of text that
arrives from elsewhere."""

from django.template.defaultfilters import pluralize


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
