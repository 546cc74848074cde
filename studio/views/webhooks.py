"""The endpoints the services call when a job ends: /webhooks/replicate/, /webhooks/fal/.

No sign-in and no CSRF token (a service cannot have either): each delivery proves itself
by its signature instead (generation.webhooks), and anything unproven gets a 4xx with the
reason and changes nothing.
"""

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from generation import webhooks


def _receive(request: HttpRequest, service: str) -> HttpResponse:
    answer = webhooks.receive(service, request.headers, request.body)
    return HttpResponse(answer.reason + "\n", status=answer.status, content_type="text/plain")


@csrf_exempt
@never_cache
@require_POST
def replicate_webhook(request: HttpRequest) -> HttpResponse:
    return _receive(request, "replicate")


@csrf_exempt
@never_cache
@require_POST
def fal_webhook(request: HttpRequest) -> HttpResponse:
    return _receive(request, "fal")
