"""Reference pictures: which a page sends (and in what order), what was sent, and the
prompt of a character sheet.

At most STUDIO_MAX_REFERENCES and at most what the provider takes: the page's own
characters (settings and props among them, and those marked "on every page") first, by
name, then the style reference if there is room; they are sent with the style reference
first. Only characters with a chosen picture are sent.
"""

from django.conf import settings

from studio.models import Character, Page

MAX_SHEET_PROMPT_CHARS = 4000


def reference_limit(provider) -> int:
    """Return how many references a call to the provider may carry."""
    limit = int(settings.STUDIO_MAX_REFERENCES)
    taken = getattr(provider, "max_references", None)
    if taken is not None:
        limit = min(limit, int(taken))
    return max(limit, 0)


def page_references(page: Page, *, limit: int) -> list[Character]:
    """Return the characters whose chosen pictures go with the page, in the order sent: the
    project's style reference first, then the page's characters (tagged on it, or on every
    page) by name. When there are more than the limit, the page's own characters are kept
    before the style reference."""
    if limit <= 0:
        return []
    cast = page.project.characters.all()
    style = [
        character
        for character in cast
        if character.kind == Character.Kind.STYLE and character.reference_id
    ]
    everywhere = [character for character in cast if character.every_page]
    own = sorted(
        {
            character.pk: character
            for character in [*page.characters.all(), *everywhere]
            if character.kind != Character.Kind.STYLE and character.reference_id
        }.values(),
        key=lambda character: character.name.lower(),
    )
    own = own[:limit]
    return style[: limit - len(own)] + own


def signature(characters: list[Character]) -> list[dict]:
    """Return what the illustration records of the references it sent (and what a page
    compares with to read "Reference changed")."""
    return [
        {
            "character": character.pk,
            "reference": character.reference_id,
            "name": character.name,
            "kind": character.kind,
            "description": character.description,
        }
        for character in characters
    ]


def changed(recorded: list[dict], current: list[dict]) -> bool:
    """Return whether the references a page would send now differ from those recorded: a
    character's other chosen picture or description, or characters added or removed."""

    def key(entries):
        return [(e["character"], e["reference"], e["description"]) for e in entries]

    return key(recorded or []) != key(current)


def sheet_prompt(character: Character) -> str:
    """Return the prompt of a character sheet: three views on a plain background, from the
    character's description and the project's style guide."""
    subject = {
        Character.Kind.CHARACTER: "character sheet",
        Character.Kind.SETTING: "reference sheet of a setting",
        Character.Kind.PROP: "reference sheet of a prop",
        Character.Kind.STYLE: "style reference sheet",
    }[character.kind]
    description = character.description.strip() or "as the story describes"
    prompt = (
        f"A {subject} of {character.name}: {description}. "
        "Show the front view, a three-quarter view and the back view side by side, the "
        "same figure in each, full length, on a plain white background, with no text."
    )
    style = character.project.style_guide.strip()
    if style:
        prompt = f"{prompt}\n\nStyle guide: {style}"
    return prompt[:MAX_SHEET_PROMPT_CHARS]
