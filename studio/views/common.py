"""What every screen shares: finding the editor's own projects and pages, and answering
bad input in words."""

from django.conf import settings
from django.core.exceptions import BadRequest, RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils.http import url_has_allowed_host_and_scheme

from ..models import Page, Project


def _owned_project(request: HttpRequest, pk: int) -> Project:
    # Another editor's project is simply not found: no hint that it exists.
    return get_object_or_404(Project, pk=pk, owner=request.user)


def _owned_page(request: HttpRequest, pk: int) -> Page:
    return get_object_or_404(
        Page.objects.select_related("project"), pk=pk, project__owner=request.user
    )


def safe_next(request: HttpRequest) -> str:
    """Return the address a form asks to come back to (`next`, posted or in the query, as
    the gallery's page sends it), or "" when there is none or it leads off this site."""
    value = request.POST.get("next") or request.GET.get("next") or ""
    allowed = url_has_allowed_host_and_scheme(
        value, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return value if value and allowed else ""


def _bad_request(reason: str) -> HttpResponse:
    """Answer bad input with 400 and the reason, in words, as plain text."""
    return HttpResponse(reason, status=400, content_type="text/plain; charset=utf-8")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The 400 handler: a view's `BadRequest` reason, in words; Django's other refusals
    (a forged host, a suspicious file name) say only "Bad request", as they may quote
    what they refused."""
    if type(exception) is BadRequest and exception.args:
        return _bad_request(str(exception))
    if isinstance(exception, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE // (1024 * 1024)
        return _bad_request(f"The form's text is over {limit} MB; that is the most it can be.")
    return _bad_request("Bad request.")
