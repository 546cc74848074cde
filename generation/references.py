"""Reference pictures: which a page sends (and in what order), what was sent, and the
prompts of a character sheet and of the cover's own picture.

At most STUDIO_MAX_REFERENCES and at most what the provider takes: the page's own
characters (settings and props among them, and those marked "on every page") first, by
name, then the style reference if there is room; they are sent with the style reference
first. Only characters with a chosen picture are sent.
"""

from django.conf import settings

from studio.models import Character, Page, Project

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


def cover_characters(project: Project) -> list[Character]:
    """Return the book's characters a generated cover shows (characters, not settings,
    props or the style), the main ones (on every page) first, then by name."""
    cast = [c for c in project.characters.all() if c.kind == Character.Kind.CHARACTER]
    return sorted(cast, key=lambda c: (not c.every_page, c.name.lower()))


def default_cover_prompt(project: Project) -> str:
    """Return the cover prompt an editor starts from: the title and the book's characters
    (up to four, each with its description)."""
    cast = cover_characters(project)[:4]
    prompt = f"The front cover illustration of the picture book \u201c{project.title}\u201d"
    if cast:
        who = "; ".join(
            f"{c.name} ({c.description.strip().rstrip('.')})" if c.description.strip() else c.name
            for c in cast
        )
        prompt += f", showing {who}"
    return (
        f"{prompt}. One inviting scene with calm space at the top for the title; "
        "no text or lettering in the picture."
    )


def cover_prompt(project: Project) -> str:
    """Return the prompt sent for the cover's own picture: the editor's cover prompt (or the
    default), with the project's style guide."""
    prompt = project.cover_prompt.strip() or default_cover_prompt(project)
    style = project.style_guide.strip()
    if style:
        prompt = f"{prompt}\n\nStyle guide: {style}"
    return prompt[:MAX_SHEET_PROMPT_CHARS]


def cover_references(project: Project, *, limit: int) -> list[Character]:
    """Return the characters whose chosen pictures go with the cover's call: the style
    reference first, then the characters it shows, up to the limit (the characters kept
    before the style reference)."""
    if limit <= 0:
        return []
    style = [
        c for c in project.characters.all() if c.kind == Character.Kind.STYLE and c.reference_id
    ]
    own = [c for c in cover_characters(project) if c.reference_id][:limit]
    return style[: limit - len(own)] + own
