"""Versions, variants and approval on the review page: the views.

Every picture a page ever had is kept as a version until the editor deletes it; "Try N
variants" queues N jobs on the engine whose pictures wait side by side for a pick; an
approved page is left alone by bulk actions. The state changes are generation.services'.
"""

import functools

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_http_methods
from django_htmx.http import trigger_client_event

from generation import selectors, services
from generation.models import Illustration

from .text import plural
from .views.common import _owned_page, safe_next
from .views.controls import _control, _mode, control, page_control, project_control

VARIANT_CHOICES = range(1, services.MAX_VARIANTS + 1)


def _owned_version(request: HttpRequest, pk: int) -> Illustration:
    return get_object_or_404(
        Illustration.objects.select_related("page__project"),
        pk=pk,
        page__project__owner=request.user,
    )


def _tells_panels(view):
    """After a versions action, an open History or Variants panel reloads itself (it
    listens for "versions-changed")."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        if request.method == "POST" and request.htmx:
            trigger_client_event(response, "versions-changed", {})
        return response

    return wrapped


def _refusable(act):
    """Wrap a versions control: a refusal of the service becomes the toast's message."""

    @functools.wraps(act)
    def wrapped(request, found):
        try:
            return act(request, found)
        except services.VersionRefused as refusal:
            return str(refusal), "error"

    return wrapped


version_control = control(_owned_version, lambda version: version.page.project)


@_tells_panels
@version_control
@_refusable
def version_use(request, version: Illustration) -> tuple[str, str]:
    """Make a kept version (or a variant) the page's current picture: no new call."""
    services.use_version(illustration=version)
    return f"Page {version.page.number} now shows the version you chose.", "success"


@_tells_panels
@version_control
@_refusable
def version_delete(request, version: Illustration) -> tuple[str, str]:
    """Delete a version that is not the current picture, with its files."""
    services.delete_version(illustration=version)
    return f"Deleted a version of page {version.page.number}'s picture.", "success"


@login_required
@require_http_methods(["GET", "POST"])
@_tells_panels
def page_variants(request: HttpRequest, pk: int) -> HttpResponse:
    """Try 1–4 variants of the page, priced before confirming; pick among them."""
    page = _owned_page(request, pk)
    if request.method == "POST":
        try:
            count = int(request.POST.get("count", ""))
        except ValueError:
            count = 0
        mode = _mode(request, page.project)

        @_refusable
        def act(request, page) -> tuple[str, str]:
            result = services.queue_variants(
                page=page,
                count=count,
                requested_by=request.user,
                confirm_approved=bool(request.POST.get("confirm_approved")),
                mode=mode,
            )
            return f"Trying {plural(result.count, 'variant')} of page {page.number}.", "success"

        return _control(request, page.project, lambda: act(request, page))
    price = selectors.picture_price(page.project)
    economy = selectors.economy_price(page.project)
    current = page.illustrations.filter(status=Illustration.Status.COMPLETE).first()
    candidates = selectors.page_candidates(page)
    context = {
        "page": page,
        "current": current,
        "approved": current is not None and current.approved_at is not None,
        "candidates": candidates,
        "waiting": any(candidate.is_active for candidate in candidates),
        # Each count priced as Generate missing prices its pages: now, and in a batch
        # where the service takes batches (None: not offered).
        "choices": [
            (n, None if price is None else price * n, None if economy is None else economy * n)
            for n in VARIANT_CHOICES
        ],
        "price": price,
        "next_url": safe_next(request),
        # Economy mode: the same choice at half price, where the service takes batches.
        "economy": economy,
    }
    template = "studio/page_variants.html#variants" if request.htmx else "studio/page_variants.html"
    return render(request, template, context)


@_tells_panels
@page_control
def page_keep_current(request, page) -> tuple[str, str]:
    """Close the choice among variants; the picture stays, the variants become versions."""
    services.keep_current_picture(page=page)
    return f"Page {page.number} keeps its picture; the variants stay as versions.", "info"


@_tells_panels
@page_control
def page_approve(request, page) -> tuple[str, str]:
    if services.approve_page(page=page):
        return f"Page {page.number} approved.", "success"
    return f"Page {page.number} has no picture to approve, or is approved already.", "info"


@_tells_panels
@page_control
def page_unapprove(request, page) -> tuple[str, str]:
    if services.unapprove_page(page=page):
        return f"Page {page.number} is no longer approved.", "info"
    return f"Page {page.number} was not approved.", "info"


@_tells_panels
@project_control
def project_approve_all(request, project) -> tuple[str, str]:
    approved = services.approve_all(project=project)
    if approved:
        return f"Approved {plural(approved, 'page')}.", "success"
    return "Every page with a picture is approved already.", "info"
