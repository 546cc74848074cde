"""The gallery of one page (/projects/<id>/gallery/<page id>/): a page of its own that
works without script (its controls are plain forms that come back to it, and its arrows
plain links), and, asked for by htmx, the fragment the review page's full-window dialog
shows, whose controls answer like the cards' and so move the review page behind it."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from .. import gallery, review
from ..models import Page
from .common import _bad_request, _owned_project

TEMPLATE = "studio/page_gallery.html"


@login_required
@require_GET
def page_gallery(request: HttpRequest, pk: int, page_pk: int) -> HttpResponse:
    """Show one page: its picture, or its versions or variants side by side (TILES at a
    time, from ?at=), its text, its state in words and its controls; ← and → walk the
    pages the review page's filter (?show=) shows."""
    project = _owned_project(request, pk)
    page = get_object_or_404(Page, pk=page_pk, project=project)
    page.project = project
    try:
        show = review.filter_key(request.GET.get("show"))
    except ValueError as error:
        return _bad_request(str(error))
    at = request.GET.get("at", "0")
    if not (at.isascii() and at.isdigit() and len(at) <= 4):
        return _bad_request("at must be a whole number of pictures.")
    at = int(at)
    (card,) = review.page_cards(project, pages=[page])
    mode, pictures = gallery.comparison(page)
    if at >= len(pictures):
        at = 0  # a version deleted meanwhile: the first ones
    at -= at % gallery.TILES
    walk = gallery.walk(project, page, show=show)
    total = project.pages.count()

    def url(of: Page | None, *, start: int = 0) -> str:
        return gallery.gallery_url(project.pk, of.pk, show=show, at=start) if of else ""

    here = url(page, start=at)
    context = {
        "project": project,
        "page": page,
        "card": card,
        "mode": mode,
        "tiles": gallery.tiles(page, pictures[at : at + gallery.TILES]),
        # While variants wait, the picture they may replace stays beside them, to keep.
        "keep": gallery.keep_current(card) if mode == "variants" else None,
        "count": len(pictures),
        "first_shown": at + 1,
        "last_shown": min(at + gallery.TILES, len(pictures)),
        "earlier_url": url(page, start=at + gallery.TILES)
        if at + gallery.TILES < len(pictures)
        else "",
        "newer_url": url(page, start=at - gallery.TILES) if at else "",
        "actions": gallery.actions(card),
        "walk": walk,
        "previous_url": url(walk.previous),
        "next_url": url(walk.next),
        "here": here,
        "show": show,
        "show_label": next(chip.label for chip in review.FILTERS if chip.key == show),
        "total": total,
        "state_words": gallery.state_words(card),
        "announce": f"Page {page.number} of {total}, {gallery.state_words(card)}".rstrip(", "),
        "review_url": project.get_absolute_url() + (f"?show={show}" if show != "all" else ""),
        # In the review page's dialog the controls are htmx's (the answer moves the cards
        # behind); on the page of its own they are plain forms that come back here.
        "live": bool(request.htmx),
    }
    template = f"{TEMPLATE}#gallery" if request.htmx else TEMPLATE
    return render(request, template, context)
