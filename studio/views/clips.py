"""Clips: queue the missing ones, retry the failed, make one page's again, play one."""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from generation import services
from generation.models import Clip

from ..files import private_file
from ..text import plural
from .controls import page_control, project_control, queued


@project_control
def project_generate_clips(request, project) -> tuple[str, str]:
    return queued(
        services.generate_missing_clips(project=project, requested_by=request.user),
        lambda n: f"Queued {plural(n, 'clip')}.",
        "Nothing to queue: every illustrated page has its clip or one on its way.",
    )


@project_control
def project_retry_failed_clips(request, project) -> tuple[str, str]:
    return queued(
        services.retry_failed_clips(project=project, requested_by=request.user),
        lambda n: f"Retrying {plural(n, 'failed clip')}.",
        "No failed clips to retry.",
    )


@page_control
def page_clip(request, page) -> tuple[str, str]:
    """Make the page's clip, or make it again (the old one plays until the new is done)."""
    return queued(
        services.queue_clip(page=page, requested_by=request.user, regenerate=True),
        lambda n: f"Page {page.number}'s clip is on its way.",
        f"Page {page.number} needs a picture first, or its clip is already on its way.",
    )


@login_required
@require_GET
def clip_video(request: HttpRequest, pk: int) -> HttpResponse:
    clip = get_object_or_404(
        Clip,
        pk=pk,
        page__project__owner=request.user,
        status__in=(Clip.Status.COMPLETE, Clip.Status.REPLACED),
    )
    if not clip.video:
        raise Http404("No clip")
    return private_file(clip.video.name, clip.content_type or "image/webp")
