"""Versions, variants and approval on the review page: the views.

Every picture a page ever had is kept as a version until the editor deletes it; "Try N
variants" queues N jobs on the engine whose pictures wait side by side for a pick; an
approved page is left alone by bulk actions. The state changes are generation.services'.
"""

import functools

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import trigger_client_event

from generation import selectors, services
from generation.models import Illustration

from .text import plural
from .views.common import _owned_page, _owned_project
from .views.controls import _control, _mode

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


def _refusable(action):
    """Wrap a service call so that a refusal becomes the toast's message."""

    def run():
        try:
            return action()
        except services.VersionRefused as refusal:
            return refusal

    return run


def _said(done):
    """Return the say() of a versions control: done(result) unless the service refused."""

    def say(result) -> tuple[str, str]:
        if isinstance(result, services.VersionRefused):
            return str(result), "error"
        return done(result)

    return say


@login_required
@require_POST
@_tells_panels
def version_use(request: HttpRequest, pk: int) -> HttpResponse:
    """Make a kept version (or a variant) the page's current picture: no new call."""
    version = _owned_version(request, pk)
    page = version.page
    return _control(
        request,
        page.project,
        _refusable(lambda: services.use_version(illustration=version)),
        _said(lambda used: (f"Page {page.number} now shows the version you chose.", "success")),
    )


@login_required
@require_POST
@_tells_panels
def version_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Delete a version that is not the current picture, with its files."""
    version = _owned_version(request, pk)
    page = version.page
    return _control(
        request,
        page.project,
        _refusable(lambda: services.delete_version(illustration=version)),
        _said(lambda _: (f"Deleted a version of page {page.number}'s picture.", "success")),
    )


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
        if isinstance(mode, HttpResponse):
            return mode

        def say(result) -> tuple[str, str]:
            if isinstance(result, services.VersionRefused):
                return str(result), "error"
            return f"Trying {plural(result.count, 'variant')} of page {page.number}.", "success"

        return _control(
            request,
            page.project,
            _refusable(
                lambda: services.queue_variants(
                    page=page,
                    count=count,
                    requested_by=request.user,
                    confirm_approved=bool(request.POST.get("confirm_approved")),
                    mode=mode,
                )
            ),
            say,
        )
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
        "choices": [(n, None if price is None else price * n) for n in VARIANT_CHOICES],
        "price": price,
        # Economy mode: the same choice at half price, where the service takes batches.
        "economy": economy,
    }
    template = "studio/page_variants.html#variants" if request.htmx else "studio/page_variants.html"
    return render(request, template, context)


@login_required
@require_POST
@_tells_panels
def page_keep_current(request: HttpRequest, pk: int) -> HttpResponse:
    """Close the choice among variants; the picture stays, the variants become versions."""
    page = _owned_page(request, pk)
    return _control(
        request,
        page.project,
        lambda: services.keep_current_picture(page=page),
        lambda _: (f"Page {page.number} keeps its picture; the variants stay as versions.", "info"),
    )


@login_required
@require_POST
@_tells_panels
def page_approve(request: HttpRequest, pk: int) -> HttpResponse:
    page = _owned_page(request, pk)
    return _control(
        request,
        page.project,
        lambda: services.approve_page(page=page),
        lambda approved: (
            (f"Page {page.number} approved.", "success")
            if approved
            else (f"Page {page.number} has no picture to approve, or is approved already.", "info")
        ),
    )


@login_required
@require_POST
@_tells_panels
def page_unapprove(request: HttpRequest, pk: int) -> HttpResponse:
    page = _owned_page(request, pk)
    return _control(
        request,
        page.project,
        lambda: services.unapprove_page(page=page),
        lambda taken: (
            (f"Page {page.number} is no longer approved.", "info")
            if taken
            else (f"Page {page.number} was not approved.", "info")
        ),
    )


@login_required
@require_POST
@_tells_panels
def project_approve_all(request: HttpRequest, pk: int) -> HttpResponse:
    project = _owned_project(request, pk)
    return _control(
        request,
        project,
        lambda: services.approve_all(project=project),
        lambda approved: (
            (f"Approved {plural(approved, 'page')}.", "success")
            if approved
            else ("Every page with a picture is approved already.", "info")
        ),
    )
