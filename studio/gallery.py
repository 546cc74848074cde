"""The gallery: one page's picture as large as the window allows, its versions or variants
side by side to pick from, its text and state in words, and the walk from page to page
under the review page's filter.

The picks, approvals and redraws are the review page's own controls (studio.versions,
studio.views.controls); this module only says which pictures and controls a page shows.
"""

from dataclasses import dataclass
from urllib.parse import urlencode

from django.urls import reverse

from generation import selectors
from generation.models import Illustration

from . import review
from .models import Page, Project

Status = Illustration.Status
TILES = 4  # pictures side by side at most: the keys 1–4 pick among them


@dataclass(frozen=True)
class Tile:
    """One picture of the comparison: a kept version or a variant, with what picking it
    does (a POST to `use_url`; none for the picture already shown, or a variant still on
    its way or failed)."""

    key: int  # the number key that picks it, 1..TILES
    picture: Illustration
    caption: str
    shown: bool = False  # the page's current picture
    use_url: str = ""
    use_label: str = ""

    @property
    def drawn(self) -> bool:
        return bool(self.picture.image) and self.picture.status in (
            Status.COMPLETE,
            Status.REPLACED,
        )

    @property
    def image_url(self) -> str:
        return review.url_for("illustration-image", self.picture.pk)


@dataclass(frozen=True)
class Action:
    """One control of the gallery: a POST (`confirm` asked first), or a panel opened beside
    the picture (`panel`). `key` is its keyboard key."""

    label: str
    url: str
    key: str
    panel: bool = False
    confirm: str = ""
    primary: bool = False


@dataclass(frozen=True)
class Walk:
    """Where the page stands among the pages the review page's filter shows, in the grid's
    order (sections first, as the grid groups them): the pages ← and → go to, round the
    book."""

    previous: Page | None
    next: Page | None
    position: int | None  # 1-based among the shown pages; None when the filter left it
    count: int  # pages the filter shows


def gallery_url(project_id: int, page_id: int, *, show: str = "all", at: int = 0) -> str:
    """Return the gallery's address for a page, keeping the filter (and which of its
    pictures come first, when it has more than TILES)."""
    url = reverse("page-gallery", args=[project_id, page_id])
    query = {key: value for key, value in (("show", show), ("at", at)) if value not in ("all", 0)}
    return f"{url}?{urlencode(query)}" if query else url


def walk(project: Project, page: Page, *, show: str) -> Walk:
    """Return the pages before and after `page` among those the filter `show` shows: the
    same truth as the review page's chips (the cards' own filters)."""
    pages = list(project.pages.all())
    heads = review.section_heads(project)
    if heads:  # the grid's order: the sections as their headings come, then by number
        place = {head.name: place for place, head in enumerate(heads)}
        pages.sort(key=lambda p: (place.get(p.section, len(heads)), p.number))
    if show == "all":
        shown = pages
    else:
        cards = review.page_cards(project, pages=pages)
        shown = [card.page for card in cards if show in card.filter_keys]
    ids = [p.pk for p in shown]
    if page.pk in ids:
        at = ids.index(page.pk)
        others = shown[at + 1 :] + shown[:at]
        position = at + 1
    else:  # the page left the filter (approved under "Not approved"): walk on from it
        place = {p.pk: at for at, p in enumerate(pages)}
        where = place[page.pk]
        after = [p for p in shown if place[p.pk] > where]
        before = [p for p in shown if place[p.pk] < where]
        others = after + before
        position = None
    if not others:
        return Walk(previous=None, next=None, position=position, count=len(shown))
    return Walk(previous=others[-1], next=others[0], position=position, count=len(shown))


def comparison(page: Page) -> tuple[str, list[Illustration]]:
    """Return what the page compares, and its pictures in order: "variants" in slot order
    (the keys 1–4 are their numbers) while a choice among them is open, else "versions"
    (the current picture, then the earlier ones, newest first)."""
    candidates = selectors.page_candidates(page)
    if candidates:
        return "variants", candidates
    versions = selectors.page_versions(page)
    versions.sort(key=lambda version: version.status != Status.COMPLETE)  # stable: newest next
    return "versions", versions


def tiles(page: Page, pictures: list[Illustration]) -> list[Tile]:
    """Return the tiles of the pictures shown together (at most TILES), numbered 1.."""
    made = []
    for key, picture in enumerate(pictures, 1):
        shown = picture.status == Status.COMPLETE
        use_url = use_label = ""
        if picture.candidate:
            name = f"Variant {picture.variant}"
            if picture.is_active:
                caption = f"{name}: {picture.get_status_display().lower()}…"
            elif not picture.image:
                caption = f"{name}: {picture.get_status_display().lower()}"
            else:
                caption = f"{name}{' · shown now' if shown else ''}"
                # Picking the variant shown now closes the choice, as use_version does.
                use_url = review.url_for("version-use", picture.pk)
                use_label = f"Keep {name}" if shown else f"Use {name}"
        elif shown:
            caption = "Current picture" + (" · approved" if picture.approved_at else "")
        else:
            when = review.when(picture.finished_at)
            caption = f"Version from {when}" if when else "Earlier version"
            use_url, use_label = review.url_for("version-use", picture.pk), "Use this version"
        made.append(
            Tile(
                key=key,
                picture=picture,
                caption=caption,
                shown=shown,
                use_url=use_url,
                use_label=use_label,
            )
        )
    return made


def actions(card: review.PageCard) -> list[Action]:
    """Return the gallery's controls for the page, by its card's state: the same URLs and
    the same confirmation as the card's."""
    urls, state = card.urls, card.state
    made = []
    if card.approved:
        made.append(Action("Unapprove", urls.unapprove, key=""))
    elif card.current is not None:
        made.append(Action("Approve", urls.approve, key="a", primary=True))
    if card.job is not None and card.job.is_active:
        pass  # a picture is on its way: nothing to redraw until it lands
    elif card.current is not None:
        made.append(Action("Regenerate", urls.regenerate, key="r", confirm=card._redraw_confirm))
    elif state in ("pending", "failed"):
        made.append(Action("Retry" if state == "failed" else "Generate", urls.retry, key="r"))
    made.append(Action("Edit prompt", urls.prompt, key="e", panel=True))
    if card.job is None or not (card.job.is_active or card.job.candidate):
        made.append(Action("Try variants", urls.variants, key="v", panel=True))
    return made


def keep_current(card: review.PageCard) -> Action | None:
    """Return the control that closes the open choice among variants and keeps the page's
    picture, when it has one that is no variant."""
    current = card.current
    if current is None or current.candidate:
        return None
    return Action(
        "Keep the current picture", review.url_for("page-keep-current", card.page.pk), key="k"
    )


def state_words(card: review.PageCard) -> str:
    """Return the page's state in words, short: "approved", "not approved", "prompt
    changed, approved", "generating", "failed"."""
    parts = []
    if card.state != "complete":
        parts.append(card.label[:1].lower() + card.label[1:])
    if card.current is not None:
        parts.append("approved" if card.approved else "not approved")
    return ", ".join(parts)
