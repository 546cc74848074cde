"""The front cover's picture, on the project's settings page: a page's picture or the
cover's own generated one, each previewed; choosing one; drawing the generated one (again)
through the background workers; and the generated pictures, served to their owner only."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from generation import services as generation_services
from generation.models import CoverJob

from .. import services as studio_services
from ..files import private_file
from ..forms import CoverDrawForm
from ..models import Project
from .common import _owned_project
from .projects import settings_page


def _back(project: Project):
    return redirect(reverse("project-settings", args=[project.pk]) + "#cover")


@login_required
@require_POST
def project_cover_draw(request: HttpRequest, pk: int) -> HttpResponse:
    """Save the cover prompt and queue the cover's own picture on the workers."""
    project = _owned_project(request, pk)
    form = CoverDrawForm(request.POST, instance=project)
    if not form.is_valid():
        return settings_page(request, project, cover_form=form, status=422)
    form.save()
    queued = generation_services.draw_cover(project=project, requested_by=request.user)
    if queued.count:
        messages.success(request, "Drawing the cover's picture; it shows here when done.")
    else:
        messages.info(request, "The cover's picture is already on its way.")
    return _back(project)


@login_required
@require_POST
def project_cover_choose(request: HttpRequest, pk: int) -> HttpResponse:
    """Choose the front's picture: a page's (source=page) or the generated one."""
    project = _owned_project(request, pk)
    try:
        studio_services.choose_cover_source(project=project, source=request.POST.get("source"))
    except ValueError as error:
        return HttpResponse(str(error), status=400, content_type="text/plain; charset=utf-8")
    messages.success(request, "Cover saved.")
    return _back(project)


@login_required
@require_GET
def cover_image(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(
        CoverJob, pk=pk, project__owner=request.user, status=CoverJob.Status.COMPLETE
    )
    if not job.image:
        raise Http404("No image")
    return private_file(job.image.name, "image/png")
