"""Words for the messages editors and operators read."""

from django.template.defaultfilters import pluralize


def plural(count: int, word: str) -> str:
    """Return "1 page", "2 pages": the count with its word."""
    return f"{count} {word}{pluralize(count)}"
