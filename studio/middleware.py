"""Request bodies are refused by their declared size before Django reads a byte of them.

Django caps a form's text (DATA_UPLOAD_MAX_MEMORY_SIZE) but not its files: without this, a
30 MB multipart body is spooled to disk while it holds a sync worker, and a 40 MB
"reference picture" is received whole before the form says 10 MB is the most.
"""

import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse

MB = 1024 * 1024
logger = logging.getLogger(__name__)


def _refusal(status: int, reason: str) -> HttpResponse:
    # No "Connection: close": WSGI servers own hop-by-hop headers (gunicorn's sync workers
    # close every connection after its answer, so the unread body is never drained).
    return HttpResponse(reason, status=status, content_type="text/plain; charset=utf-8")


def body_limit(request: HttpRequest) -> int:
    """Return the most bytes the request's body may have: more for file uploads."""
    if request.content_type == "multipart/form-data":
        return settings.STUDIO_MAX_UPLOAD_BODY_BYTES
    return settings.STUDIO_MAX_BODY_BYTES


class BodyLimitMiddleware:
    """413 for a Content-Length over the limit, 411 for a body without one; first in
    MIDDLEWARE so nothing before it reads the body (CSRF reads the form)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        declared = request.META.get("CONTENT_LENGTH") or ""
        limit = body_limit(request)
        if declared:
            if not (declared.isascii() and declared.isdigit()):
                return _refusal(400, "Content-Length must be a number of bytes.")
            if len(declared) > 15 or int(declared) > limit:
                size = f"{int(declared) / MB:,.1f} MB" if len(declared) <= 15 else "too large"
                return _refusal(
                    413, f"The request is {size}; the studio takes at most {limit // MB} MB."
                )
        elif request.META.get("HTTP_TRANSFER_ENCODING"):
            # Django reads no byte of a body without a length (a chunked one): say so, rather
            # than act on an empty form.
            return _refusal(411, f"Send the body with a Content-Length (at most {limit // MB} MB).")
        return self.get_response(request)


class RedisUnreachableMiddleware:
    """503 with the reason, not a 500, for a request that needed Redis and could not reach
    it: a sign-out whose session must leave the cache too (studio.cache), or the broker.
    Pages and polls do not need it (their cache reads miss)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception):
        from studio.cache import UNREACHABLE, RedisUnavailable

        if not isinstance(exception, (RedisUnavailable, *UNREACHABLE)):
            return None
        logger.warning(
            "Redis is unreachable for %s %s: %s", request.method, request.path, exception
        )
        response = _refusal(
            503, "Redis cannot be reached right now; nothing was lost. Try again in a minute."
        )
        response["Retry-After"] = "30"
        return response
