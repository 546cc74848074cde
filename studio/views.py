"""Editor-facing pages. Every view requires sign-in and sees only the editor's projects."""

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HTMX_STOP_POLLING, trigger_client_event

from generation import selectors, services
from generation.models import Illustration

from .models import Project


def _owned_project(request: HttpRequest, pk: int) -> Project:
    # Another editor's project is simply not found: no hint that it exists.
    return get_object_or_404(Project, pk=pk, owner=request.user)


def _live_context(project: Project) -> dict:
    progress = selectors.project_progress(project)
    return {
        "project": project,
        "progress": progress,
        "run": selectors.latest_run(project),
        "cards": selectors.page_cards(project),
        "polling": progress.active > 0,
    }


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
    context = _live_context(project)
    if request.htmx:
        # The poll: once nothing is active the answer drops its polling attributes, and
        # 286 tells htmx 2 to stop as well.
        status = 200 if context["polling"] else HTMX_STOP_POLLING
        return render(request, "studio/project_detail.html#live", context, status=status)
    return render(request, "studio/project_detail.html", context)


@login_required
@require_POST
def project_generate(request: HttpRequest, pk: int) -> HttpResponse:
    project = _owned_project(request, pk)
    queued = services.generate_missing(project=project, requested_by=request.user)
    if queued.count:
        message = f"Queued {queued.count} illustration{'s' if queued.count != 1 else ''}."
    else:
        message = "Nothing to queue: every page is illustrated or already on its way."
    if not request.htmx:
        return redirect(project)
    response = render(request, "studio/project_detail.html#live", _live_context(project))
    return trigger_client_event(response, "toast", {"level": "info", "message": message})


@login_required
@require_GET
def illustration_image(request: HttpRequest, pk: int) -> FileResponse:
    illustration = get_object_or_404(
        Illustration.objects.select_related("page__project"),
        pk=pk,
        page__project__owner=request.user,
        status=Illustration.Status.COMPLETE,
    )
    if not illustration.image:
        raise Http404("No image")
    response = FileResponse(illustration.image.open("rb"), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response
