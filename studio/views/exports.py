"""The printed book: its preview, its exports (ZIP, PDF) and their downloads."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HTMX_STOP_POLLING

from generation import selectors

from .. import book
from .. import services as studio_services
from ..files import private_file
from ..forms import ExportForm
from ..models import Export
from .common import _owned_project


@login_required
@require_GET
def project_book(request: HttpRequest, pk: int) -> HttpResponse:
    """The book preview: one spread at a time, as it will print (?spread=N, ?size=a4)."""
    project = _owned_project(request, pk)
    try:
        number = int(request.GET.get("spread", "1"))
    except ValueError:
        return HttpResponseBadRequest("spread must be a whole number")
    try:
        spread = book.spread_of(project, number)
        size = book.page_size(project, request.GET.get("size"))
    except ValueError as error:
        return HttpResponseBadRequest(str(error))
    context = {
        "project": project,
        "spread": spread,
        "size": size,
        "sizes": Export.PageSize.choices,
        "spread_numbers": range(1, spread.count + 1),
    }
    return render(request, "studio/project_book.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def project_export(request: HttpRequest, pk: int) -> HttpResponse:
    """Start an export (ZIP or PDF) and follow it; warns first about missing pages."""
    project = _owned_project(request, pk)
    last = project.exports.first()  # the form offers the last choice again
    initial = {"format": last.format, "page_size": last.page_size} if last else None
    form = ExportForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        running = Export.objects.running_for(request.user.pk).count()
        studio_services.start_export(
            project=project,
            format=form.cleaned_data["format"],
            page_size=form.cleaned_data["page_size"],
        )
        if running >= settings.STUDIO_EXPORTS_PER_EDITOR:
            messages.info(request, waiting_message(running))
        else:
            messages.success(request, "Export started; it will be ready to download here.")
        return redirect("project-export", pk=project.pk)
    exports = list(project.exports.with_liveness()[:10])
    running = Export.objects.running_for(request.user.pk).count()
    for export in exports:
        if export.status == Export.Status.QUEUED and running >= settings.STUDIO_EXPORTS_PER_EDITOR:
            export.waiting = waiting_message(running)
    context = {
        "project": project,
        "form": form,
        "progress": selectors.project_progress(project),
        "exports": exports,
        "polling": any(
            e.shown_status in (Export.Status.QUEUED, Export.Status.RUNNING) for e in exports
        ),
    }
    if request.htmx:
        status = 200 if context["polling"] else HTMX_STOP_POLLING
        return render(request, "studio/project_export.html#exports", context, status=status)
    status = 422 if request.method == "POST" else 200
    return render(request, "studio/project_export.html", context, status=status)


def waiting_message(running: int) -> str:
    """Return why an editor's export waits: the cap on exports running at once."""
    return (
        f"You have {running} export{'s' if running != 1 else ''} running (at most "
        f"{settings.STUDIO_EXPORTS_PER_EDITOR} at once); this one starts when one finishes."
    )


@login_required
@require_GET
def export_download(request: HttpRequest, pk: int) -> HttpResponse:
    export = get_object_or_404(
        Export, pk=pk, project__owner=request.user, status=Export.Status.COMPLETE
    )
    if not export.file:
        raise Http404("No file")
    content_type = "application/zip" if export.format == Export.Format.ZIP else "application/pdf"
    response = private_file(export.file.name, content_type)
    response["Content-Disposition"] = (
        f'attachment; filename="{export.file.name.rsplit("/", 1)[-1]}"'
    )
    return response
