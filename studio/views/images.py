"""A complete picture and its thumbnail, served to their owner only."""

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from generation import thumbnails
from generation.models import Illustration

from ..files import private_file


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


@login_required
@require_GET
def illustration_image(request: HttpRequest, pk: int) -> FileResponse:
    illustration = _owned_image(request, pk)
    return private_file(illustration.image.name, "image/png")


@login_required
@require_GET
def illustration_thumbnail(request: HttpRequest, pk: int) -> FileResponse:
    illustration = _owned_image(request, pk)
    return private_file(thumbnails.ensure_thumbnail(illustration.image), "image/webp")
