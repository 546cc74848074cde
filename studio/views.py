"""Editor-facing pages. Every view requires sign-in and sees only the editor's projects.

The review page is one template whose regions are inline partials: the header (progress,
run state, controls; it also carries the poll) and one card per page. The poll and every
control answer with the header and the cards that changed, as out-of-band swaps.
"""

from datetime import datetime, timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HTMX_STOP_POLLING, trigger_client_event

from generation import selectors, services, thumbnails
from generation.models import Illustration, Run

from .forms import PromptForm
from .models import Page, Project

TEMPLATE = "studio/project_detail.html"
# Changes are re-sent for a few seconds past the cursor, so a write whose timestamp came
# from a slightly slow clock (another worker machine) is never missed; re-sending a card
# is harmless.
CURSOR_MARGIN = timedelta(seconds=5)


def _owned_project(request: HttpRequest, pk: int) -> Project:
    # Another editor's project is simply not found: no hint that it exists.
    return get_object_or_404(Project, pk=pk, owner=request.user)


def _owned_page(request: HttpRequest, pk: int) -> Page:
    return get_object_or_404(
        Page.objects.select_related("project"), pk=pk, project__owner=request.user
    )


def _header_context(project: Project) -> dict:
    progress = selectors.project_progress(project)
    run = selectors.latest_run(project)
    return {
        "project": project,
        "progress": progress,
        "run": run,
        "polling": progress.busy or (run is not None and run.state == Run.State.STOPPING),
        "cursor": timezone.now().timestamp(),
    }


def _cards(project: Project, context: dict, pages=None) -> list:
    run = context["run"]
    return selectors.page_cards(project, pages=pages, latest_run_id=run.pk if run else None)


def _since(request: HttpRequest) -> datetime:
    try:
        cursor = float(request.GET.get("since", ""))
    except ValueError:
        raise BadRequest("since must be a timestamp") from None
    return datetime.fromtimestamp(cursor, tz=timezone.get_current_timezone()) - CURSOR_MARGIN


def _regions(request, project: Project, *, since: datetime, poll: bool = False) -> HttpResponse:
    """Answer with the header and, out of band, every card changed since `since`.

    For the poll, an idle project's answer is 286: the header it carries has no polling
    attributes (which stops htmx 4), and 286 stops htmx 2 as well."""
    context = _header_context(project)
    if request.GET.get("cards") == "0":  # the generating view shows no cards
        context.update(cards=[], header_only=True)
    else:
        pages = selectors.changed_pages(project, since=since)
        context["cards"] = _cards(project, context, pages=pages)
    # The poll swaps its own element (the header); a control's answer swaps it out of band.
    context["header_oob"] = not poll
    status = HTMX_STOP_POLLING if poll and not context["polling"] else 200
    return render(request, "studio/project_regions.html", context, status=status)


def _after_action(request, project: Project, *, message: str, level: str, started: datetime):
    if not request.htmx:
        getattr(messages, level)(request, message)
        return redirect(project)
    # Only the cards this action changed: its writes are stamped on this server's clock.
    response = _regions(request, project, since=started)
    return trigger_client_event(response, "toast", {"level": level, "message": message})


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


# --- pages -------------------------------------------------------------------------------


@login_required
@require_GET
def project_list(request: HttpRequest) -> HttpResponse:
    projects = list(Project.objects.filter(owner=request.user))
    rows = [(project, selectors.project_progress(project)) for project in projects]
    return render(request, "studio/project_list.html", {"rows": rows})


@login_required
@require_GET
def project_detail(request: HttpRequest, pk: int) -> HttpResponse:
    project = _owned_project(request, pk)
    context = _header_context(project)
    context["cards"] = _cards(project, context)
    return render(request, TEMPLATE, context)


@login_required
@require_GET
def project_poll(request: HttpRequest, pk: int) -> HttpResponse:
    """One request per tab every 2 s: the header plus the cards changed since the cursor."""
    return _regions(request, _owned_project(request, pk), since=_since(request), poll=True)


@login_required
@require_GET
def project_generating(request: HttpRequest, pk: int) -> HttpResponse:
    """The generating view: story, then illustrations. Opening it never starts work."""
    project = _owned_project(request, pk)
    context = _header_context(project)
    context["header_only"] = True
    return render(request, "studio/project_generating.html", context)


# --- project controls ----------------------------------------------------------------------


@login_required
@require_POST
def project_generate(request: HttpRequest, pk: int) -> HttpResponse:
    project = _owned_project(request, pk)
    started = timezone.now()
    queued = services.generate_missing(project=project, requested_by=request.user)
    if queued.count:
        message, level = f"Queued {_plural(queued.count, 'illustration')}.", "success"
    elif queued.resumed:
        message, level = "Resumed: the missing pages were already queued.", "success"
    else:
        message, level = "Nothing to queue: every page is illustrated or on its way.", "info"
    return _after_action(request, project, message=message, level=level, started=started)


@login_required
@require_POST
def project_retry_failed(request: HttpRequest, pk: int) -> HttpResponse:
    project = _owned_project(request, pk)
    started = timezone.now()
    queued = services.retry_failed(project=project, requested_by=request.user)
    message = (
        f"Retrying {_plural(queued.count, 'failed page')}."
        if queued.count
        else "No failed pages to retry."
    )
    level = "success" if queued.count else "info"
    return _after_action(request, project, message=message, level=level, started=started)


@login_required
@require_POST
def project_stop(request: HttpRequest, pk: int) -> HttpResponse:
    project = _owned_project(request, pk)
    started = timezone.now()
    run = services.stop(project=project)
    if run is None:
        message, level = "Nothing is running.", "info"
    elif run.state == Run.State.STOPPING:
        message, level = (
            "Stopping: the images being drawn now will finish; the rest waits.",
            "warning",
        )
    else:
        message, level = "Stopped. Completed illustrations are kept.", "warning"
    return _after_action(request, project, message=message, level=level, started=started)


@login_required
@require_POST
def project_pause(request: HttpRequest, pk: int) -> HttpResponse:
    project = _owned_project(request, pk)
    started = timezone.now()
    run = services.pause(project=project)
    message, level = (
        ("Paused. Press Resume to continue.", "warning") if run else ("Nothing to pause.", "info")
    )
    return _after_action(request, project, message=message, level=level, started=started)


@login_required
@require_POST
def project_resume(request: HttpRequest, pk: int) -> HttpResponse:
    project = _owned_project(request, pk)
    started = timezone.now()
    run = services.resume(project=project)
    message, level = ("Resumed.", "success") if run else ("Nothing to resume.", "info")
    return _after_action(request, project, message=message, level=level, started=started)


# --- page controls ---------------------------------------------------------------------


@login_required
@require_POST
def page_retry(request: HttpRequest, pk: int) -> HttpResponse:
    page = _owned_page(request, pk)
    started = timezone.now()
    queued = services.queue_page(page=page, requested_by=request.user)
    message = (
        f"Page {page.number} queued."
        if queued.count
        else f"Page {page.number} is already illustrated or on its way."
    )
    return _after_action(
        request,
        page.project,
        message=message,
        level="success" if queued.count else "info",
        started=started,
    )


@login_required
@require_POST
def page_regenerate(request: HttpRequest, pk: int) -> HttpResponse:
    page = _owned_page(request, pk)
    started = timezone.now()
    queued = services.queue_page(page=page, requested_by=request.user, regenerate=True)
    message = (
        f"Page {page.number} will be drawn again; its picture stays until the new one is done."
        if queued.count
        else f"Page {page.number} is already on its way."
    )
    return _after_action(
        request,
        page.project,
        message=message,
        level="success" if queued.count else "info",
        started=started,
    )


@login_required
@require_POST
def page_next(request: HttpRequest, pk: int) -> HttpResponse:
    page = _owned_page(request, pk)
    started = timezone.now()
    moved = services.prioritize(page=page, requested_by=request.user)
    message = (
        f"Page {page.number} is next in line."
        if moved
        else f"Page {page.number} is not waiting in the queue."
    )
    return _after_action(
        request,
        page.project,
        message=message,
        level="success" if moved else "info",
        started=started,
    )


@login_required
@require_http_methods(["GET", "POST"])
def page_prompt(request: HttpRequest, pk: int) -> HttpResponse:
    """Edit what the page asks the image service to draw; optionally retry at once."""
    page = _owned_page(request, pk)
    form = PromptForm(request.POST or None, instance=page)
    if request.method == "POST" and form.is_valid():
        started = timezone.now()
        form.save()
        message = f"Prompt of page {page.number} saved."
        if "retry" in request.POST:
            queued = services.queue_page(page=page, requested_by=request.user)
            if queued.count:
                message += " Drawing it again."
        return _after_action(
            request, page.project, message=message, level="success", started=started
        )
    template = "studio/page_prompt.html#prompt-form" if request.htmx else "studio/page_prompt.html"
    status = 422 if request.method == "POST" else 200  # htmx swaps 422: see base.html
    return render(request, template, {"page": page, "form": form}, status=status)


@login_required
@require_GET
def page_history(request: HttpRequest, pk: int) -> HttpResponse:
    page = _owned_page(request, pk)
    jobs = page.illustrations.prefetch_related("attempts").order_by("-created_at", "-pk")
    template = "studio/page_history.html#history" if request.htmx else "studio/page_history.html"
    return render(request, template, {"page": page, "jobs": jobs})


# --- images ------------------------------------------------------------------------------


def _owned_image(request: HttpRequest, pk: int) -> Illustration:
    illustration = get_object_or_404(
        Illustration.objects.select_related("page__project"),
        pk=pk,
        page__project__owner=request.user,
        status__in=(Illustration.Status.COMPLETE, Illustration.Status.REPLACED),
    )
    if not illustration.image:
        raise Http404("No image")
    return illustration


def _private_file(file, content_type: str) -> FileResponse:
    response = FileResponse(file, content_type=content_type)
    response["Cache-Control"] = "private, max-age=86400"
    return response


@login_required
@require_GET
def illustration_image(request: HttpRequest, pk: int) -> FileResponse:
    illustration = _owned_image(request, pk)
    return _private_file(illustration.image.open("rb"), "image/png")


@login_required
@require_GET
def illustration_thumbnail(request: HttpRequest, pk: int) -> FileResponse:
    illustration = _owned_image(request, pk)
    return _private_file(thumbnails.open_thumbnail(illustration.image), "image/webp")
