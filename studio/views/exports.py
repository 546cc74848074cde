"""The printed book: its preview, its exports (ZIP, PDF, print files, EPUB) and their
downloads."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HTMX_STOP_POLLING

from generation import selectors
from generation import services as generation_services
from generation.models import ACTIVE_STATUSES, Illustration, Upscale

from .. import book, geometry
from .. import services as studio_services
from ..files import private_file
from ..forms import ExportForm
from ..models import Export
from ..printing import cover_picture, report_lines
from .common import _owned_project


@login_required
@require_GET
def project_book(request: HttpRequest, pk: int) -> HttpResponse:
    """The book preview: one spread at a time, as it will print (?spread=N; ?trim= shows
    another trim than the project's; ?guides=1 shows the bleed, the trim line and the safe
    area)."""
    project = _owned_project(request, pk)
    try:
        number = int(request.GET.get("spread", "1"))
    except ValueError:
        return HttpResponseBadRequest("spread must be a whole number")
    try:
        trim = book.project_trim(project, request.GET.get("trim"))
        spread = book.spread_of(project, number, trim)
    except ValueError as error:
        return HttpResponseBadRequest(str(error))
    guides = request.GET.get("guides") == "1"
    context = {
        "project": project,
        "spread": spread,
        "trim": trim,
        "trims": geometry.trim_choices(project.trim, trim.key),
        "guides": guides,
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
    # The trim chosen in the form (?trim= as the choice changes, or the one posted): the
    # list of pages under 300 DPI is for it.
    asked = request.POST.get("trim") if request.method == "POST" else request.GET.get("trim")
    form = ExportForm(request.POST or None, initial=initial, project=project, trim=asked or "")
    try:
        trim = book.project_trim(project, asked)
        trim_error = ""
    except ValueError as error:
        trim, trim_error = geometry.parse_trim(project.trim), f"The {error}."
    polled = request.GET.get("part") == "resolution"
    if request.htmx and (polled or request.htmx.target == "resolution"):
        # The trim chosen, or the list's own poll while pictures are being upscaled (it
        # stops once none is).
        context = {"trim_error": trim_error, **resolution_context(project, trim)}
        status = 422 if trim_error else 200
        if polled and not trim_error and not context["upscaling"]:
            status = HTMX_STOP_POLLING
        return render(request, "studio/project_export.html#resolution", context, status=status)
    if request.method == "POST" and form.is_valid():
        running = Export.objects.running_for(request.user.pk).count()
        studio_services.start_export(
            project=project,
            format=form.cleaned_data["format"],
            page_size=form.cleaned_data["page_size"],
            trim=form.cleaned_data["trim"],
            paper=form.cleaned_data["paper"],
            resample=form.cleaned_data["resample"],
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
    for export in exports:
        export.report_lines = report_lines(export.report)
    context = {
        "project": project,
        "form": form,
        "trim_error": trim_error if request.method == "GET" else "",  # a POST's: the form's
        "cover_front": cover_front(project),
        **resolution_context(project, trim),
        "exports": exports,
        "polling": any(
            e.shown_status in (Export.Status.QUEUED, Export.Status.RUNNING) for e in exports
        ),
    }
    if request.htmx:
        status = 200 if context["polling"] else HTMX_STOP_POLLING
        return render(request, "studio/project_export.html#exports", context, status=status)
    status = 422 if request.method == "POST" or trim_error else 200
    return render(request, "studio/project_export.html", context, status=status)


def cover_front(project) -> str:
    """Return, in words, the picture the cover's front prints."""
    picture = cover_picture(project)
    if picture is None:
        return "no picture yet (a plain colour)"
    if getattr(picture, "page", None) is not None:
        return f"the picture of page {picture.page.number}"
    return "its own generated picture"


def resolution_context(project, trim: geometry.Trim) -> dict:
    """Return what the list of pages under 300 DPI at `trim` shows, with the upscale step
    offered for them."""
    resolution = book.print_resolution(project, trim)
    low_pages = resolution.low
    return {
        "project": project,
        "trim": trim,
        "low_pages": low_pages,
        "upscaled_pages": resolution.upscaled,
        "upscale": selectors.upscale_offer(len(to_upscale(low_pages))),
        "upscaling": [low for low in low_pages if low.upscaling],
        "upscale_failures": upscale_failures(project),
        "needed_pixels": book.needed_pixels(trim, resolution.pages),
        "progress": selectors.project_progress(project),
    }


def to_upscale(low_pages) -> list:
    """Return the low pages an upscale could help: none on its way for their picture, and
    not already upscaled (a second upscale of the same picture gives the same pixels)."""
    return [low for low in low_pages if not low.upscaling and low.upscaled is None]


def upscale_failures(project) -> list[Upscale]:
    """Return the failed upscales of the project's current pictures that have no complete
    or active one since (their reason is shown; Upscale tries them again)."""
    current = Illustration.objects.filter(
        page__project=project, status=Illustration.Status.COMPLETE
    )
    settled = Upscale.objects.filter(
        source__in=current, status__in=(*ACTIVE_STATUSES, Upscale.Status.COMPLETE)
    ).values("source_id")
    failed = (
        Upscale.objects.filter(source__in=current, status=Upscale.Status.FAILED)
        .exclude(source_id__in=settled)
        .select_related("page")
        .order_by("page__number", "-pk")
    )
    latest = {}
    for upscale in failed:
        latest.setdefault(upscale.source_id, upscale)
    return list(latest.values())


@login_required
@require_POST
def project_upscale(request: HttpRequest, pk: int) -> HttpResponse:
    """Upscale the pictures that print under 300 DPI at the project's trim through the
    configured upscale service (one priced call each, in the background workers)."""
    project = _owned_project(request, pk)
    if selectors.upscale_offer(0) is None:
        return HttpResponseBadRequest(
            "No upscale service is configured (STUDIO_UPSCALE_PROVIDER and its key): tick "
            "Resample on the export form to resample the pictures here instead."
        )
    try:  # the trim chosen in the export form, whose list offered the upscale
        trim = book.project_trim(project, request.POST.get("trim"))
    except ValueError as error:
        return HttpResponseBadRequest(f"The {error}.")
    pages = to_upscale(book.low_resolution_pages(project, trim))
    if not pages:
        messages.info(request, "No picture needs an upscale: none prints under 300 DPI.")
        return redirect("project-export", pk=project.pk)
    offer = selectors.upscale_offer(len(pages))
    result = generation_services.upscale_pages(
        project=project, page_ids=[low.page_id for low in pages], requested_by=request.user
    )
    messages.success(
        request,
        f"Upscaling {result.count} picture{'s' if result.count != 1 else ''} ×{offer['scale']} "
        f"through {offer['label']} ({offer['model']}), about {offer['estimate']} in all; the "
        "print files use them once they are done.",
    )
    return redirect("project-export", pk=project.pk)


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
    content_type = {
        Export.Format.ZIP: "application/zip",
        Export.Format.EPUB: "application/epub+zip",
    }.get(export.format, "application/pdf")
    response = private_file(export.file.name, content_type)
    response["Content-Disposition"] = (
        f'attachment; filename="{export.file.name.rsplit("/", 1)[-1]}"'
    )
    return response
