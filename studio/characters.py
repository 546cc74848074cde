"""Changes to a project's characters, their reference pictures, and who appears on which
page. Pages are tagged from their text (a character's name or aliases, whole words, any
case) when a character is created or a page's text changes; editors can change the tags.
"""

import io
import re
from dataclasses import dataclass

from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from PIL import Image, ImageOps, UnidentifiedImageError

from generation.models import WORKING_STATUSES, SheetJob

from . import files
from .models import Character, Page, Project, ReferenceImage
from .text import megabytes, size_over

MAX_REFERENCE_BYTES = 10 * 1024 * 1024
MAX_REFERENCE_SIDE = 4096
REFERENCE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class CharacterError(ValueError):
    """A character or picture the studio cannot take; the message says why, for the editor."""


@dataclass(frozen=True)
class CheckedImage:
    content: bytes
    content_type: str
    width: int
    height: int


def check_reference_image(content: bytes, *, size: int | None = None) -> CheckedImage:
    """Return the picture decoded whole by Pillow and encoded again: PNG, JPEG or WebP, at
    most 10 MB and 4096 pixels a side. Raise CharacterError saying what is wrong otherwise.

    Every pixel is decoded here, at upload, so a cut-off or corrupt picture is the
    uploader's form error, never a worker's failure later. The stored picture is upright
    (EXIF orientation applied) and carries no EXIF (camera, GPS) nor text chunks: a JPEG
    stays a JPEG, anything else becomes a PNG (lossless).

    `size` is the file's whole size when only its start was read (enough to refuse it):
    the message names the real size, not the bytes read."""
    size = max(len(content), size or 0)
    if size > MAX_REFERENCE_BYTES:
        raise CharacterError(
            f"The picture is {size_over(size, MAX_REFERENCE_BYTES)}; at most "
            f"{megabytes(MAX_REFERENCE_BYTES)} is accepted."
        )
    try:
        with Image.open(io.BytesIO(content)) as image:
            kind, (width, height) = image.format, image.size
            if kind not in REFERENCE_FORMATS:
                raise CharacterError(
                    f"The picture is {kind or 'of an unknown format'}; upload a PNG, JPEG "
                    f"or WebP picture."
                )
            if max(width, height) > MAX_REFERENCE_SIDE:
                raise CharacterError(
                    f"The picture is {width}×{height} pixels; at most {MAX_REFERENCE_SIDE} "
                    f"pixels a side is accepted."
                )
            try:
                image.load()
            except OSError:
                raise CharacterError(
                    "The picture is cut off or damaged (its pixels cannot all be read); "
                    "save it again, then upload it."
                ) from None
            return _reencoded(ImageOps.exif_transpose(image), kind)
    except CharacterError:
        raise
    except Image.DecompressionBombError:
        raise CharacterError("The picture is far too large to open.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise CharacterError(
            "That file is not a picture the studio can read; upload a PNG, JPEG or WebP picture."
        ) from None


def _reencoded(image: Image.Image, kind: str) -> CheckedImage:
    """Return the decoded picture encoded again, with none of the upload's metadata."""
    buffer = io.BytesIO()
    icc = image.info.get("icc_profile")  # colours, not private: kept
    if kind == "JPEG":
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image.save(buffer, format="JPEG", quality=92, icc_profile=icc)
        content_type = "image/jpeg"
    else:
        if image.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
            image = image.convert("RGBA")
        image.save(buffer, format="PNG", icc_profile=icc)
        content_type = "image/png"
    return CheckedImage(buffer.getvalue(), content_type, image.width, image.height)


def parse_aliases(text: str) -> str:
    """Return aliases as stored: comma-separated, trimmed, without empties or repeats."""
    seen: dict[str, str] = {}
    for alias in text.split(","):
        alias = " ".join(alias.split())
        if alias and alias.lower() not in seen:
            seen[alias.lower()] = alias
    return ", ".join(seen.values())


def _pattern(character: Character) -> re.Pattern | None:
    names = [character.name, *character.alias_list]
    names = [re.escape(name.strip()) for name in names if name.strip()]
    if not names:
        return None
    # Whole words: "Peter" names Peter, not "Peterson"; "Mr. McGregor" ends on a dot.
    return re.compile(r"(?<!\w)(?:" + "|".join(names) + r")(?!\w)", re.IGNORECASE)


def names_on(character: Character, text: str) -> bool:
    """Return whether the text names the character (its name or an alias, as a whole word,
    in any case)."""
    pattern = _pattern(character)
    return bool(pattern and pattern.search(text))


def tag_pages_naming(character: Character) -> int:
    """Tag the character on every page of its project whose text names it. Return how many
    pages it was added to."""
    pages = [
        page
        for page in character.project.pages.exclude(characters=character)
        if names_on(character, page.text)
    ]
    character.pages.add(*pages)
    return len(pages)


def suggest_for_page(page: Page) -> int:
    """Tag the page with the project's characters its text names (after its text changed);
    tags the editor set stay. Return how many were added."""
    found = [
        character
        for character in page.project.characters.exclude(kind=Character.Kind.STYLE).exclude(
            pages=page
        )
        if names_on(character, page.text)
    ]
    page.characters.add(*found)
    return len(found)


@transaction.atomic
def create_character(
    *,
    project: Project,
    name: str,
    description: str = "",
    aliases: str = "",
    kind: str = Character.Kind.CHARACTER,
    image: CheckedImage | None = None,
    every_page: bool = False,
) -> Character:
    """Create a character (with its first reference picture, if given) and tag the pages
    that name it; with every_page, its picture goes with every page (not for the style
    reference, which always does). Raise CharacterError when the name is taken or a second
    style reference is asked for."""
    name = " ".join(name.split())
    if not name:
        raise CharacterError("Give the character a name.")
    if kind not in Character.Kind.values:
        raise CharacterError(f"Unknown kind {kind!r}: choose character, setting, prop or style.")
    _check_unique(project, name=name, kind=kind)
    try:
        with transaction.atomic():
            character = Character.objects.create(
                project=project,
                name=name,
                description=description.strip(),
                aliases=parse_aliases(aliases),
                kind=kind,
                every_page=every_page and kind != Character.Kind.STYLE,
            )
    except IntegrityError:  # another request took the name meanwhile
        raise CharacterError(f"This project already has “{name}”.") from None
    if image is not None:
        add_reference(character=character, image=image)
    if kind != Character.Kind.STYLE:  # the style reference goes with every page anyway
        tag_pages_naming(character)
    return character


def _check_unique(project: Project, *, name: str, kind: str, exclude: int | None = None):
    others = project.characters.exclude(pk=exclude)
    if others.filter(name__iexact=name).exists():
        raise CharacterError(f"This project already has “{name}”.")
    if kind == Character.Kind.STYLE and others.filter(kind=Character.Kind.STYLE).exists():
        raise CharacterError("This project already has a style reference; edit that one.")


@transaction.atomic
def update_character(
    *,
    character: Character,
    name: str,
    description: str,
    aliases: str,
    kind: str,
    every_page: bool | None = None,
) -> Character:
    """Change a character's name, description, aliases, kind or whether it goes with every
    page (None keeps it). A changed description, or every page, makes the illustrated pages
    drawn without it read "Reference changed" (offered for regeneration, never redrawn); a
    new name or alias tags the pages that now name it."""
    name = " ".join(name.split())
    if not name:
        raise CharacterError("Give the character a name.")
    _check_unique(character.project, name=name, kind=kind, exclude=character.pk)
    character.name = name
    character.description = description.strip()
    character.aliases = parse_aliases(aliases)
    character.kind = kind
    if every_page is not None:
        character.every_page = every_page
    character.every_page = character.every_page and kind != Character.Kind.STYLE
    character.save()
    if kind == Character.Kind.STYLE:
        character.pages.clear()
    else:
        tag_pages_naming(character)
    return character


@transaction.atomic
def add_reference(
    *, character: Character, image: CheckedImage, choose: bool = True, drawn: bool = False
) -> ReferenceImage:
    """Keep a new version of the character's reference picture (an upload, or drawn by
    the studio); with choose, it becomes the one sent with pages. Earlier versions stay,
    to pick from."""
    version = ReferenceImage(
        character=character,
        source=ReferenceImage.Source.DRAWN if drawn else ReferenceImage.Source.UPLOAD,
        content_type=image.content_type,
        width=image.width,
        height=image.height,
    )
    name = f"reference.{EXTENSIONS[image.content_type]}"
    version.image.save(name, ContentFile(image.content), save=False)
    version.save()
    if choose:
        choose_reference(character=character, version=version)
    return version


def choose_reference(*, character: Character, version: ReferenceImage) -> bool:
    """Make a version the character's picture sent with pages. Return whether it changed."""
    if version.character_id != character.pk:
        raise CharacterError("That picture belongs to another character.")
    changed = (
        Character.objects.filter(pk=character.pk)
        .exclude(reference=version)
        .update(reference=version)
    )
    character.reference = version
    return bool(changed)


def set_page_characters(*, page: Page, characters) -> None:
    """Say exactly who appears on the page (the editor's choice over the suggestions)."""
    chosen = [c for c in characters if c.project_id == page.project_id]
    page.characters.set(chosen)


@transaction.atomic
def delete_character(*, character: Character) -> None:
    """Delete a character with every version of its reference picture (their files go once
    that commits) and its sheet jobs; the pages it was tagged on lose the tag. Pictures
    drawn with it stay, and read "Reference changed" (they were drawn with a reference the
    page no longer sends), to regenerate or keep. Raise CharacterError while a worker is
    drawing its sheet."""
    # Queued sheets are canceled first, by one compare-and-set UPDATE, as a worker claims:
    # either the worker claimed first (and the check below refuses) or it finds nothing.
    SheetJob.objects.filter(character=character).cancel_queued()
    if SheetJob.objects.filter(character=character, status__in=WORKING_STATUSES).exists():
        raise CharacterError(
            f"A sheet of {character.name} is being drawn; delete it once that is done."
        )
    names = {version.image.name for version in character.versions.all() if version.image}
    character.delete()  # its versions, sheet jobs and page tags go with it
    files.delete_after_commit(names)


@transaction.atomic
def delete_reference(*, version: ReferenceImage) -> None:
    """Delete an earlier version of a character's reference picture with its file. Raise
    CharacterError for the chosen version: pick another first."""
    (character,) = Character.objects.filter(pk=version.character_id).locked()
    if character.reference_id == version.pk:
        raise CharacterError(
            f"Version {version.pk} is the picture sent with {character.name}'s pages; "
            "choose another version before deleting it."
        )
    name = version.image.name
    version.delete()
    if name:
        files.delete_after_commit([name])
