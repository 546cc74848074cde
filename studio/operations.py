"""Operator endpoints: the operations page (staff), /healthz (anyone) and /metrics (token).

The figures come from generation.operations and generation.metrics; this module only
shapes them for the page (the chart is drawn here as SVG shapes, no script) and guards
the endpoints.
"""

import hmac
from dataclasses import dataclass

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from generation import metrics, services
from generation import operations as ops
from generation.models import ProviderAccount

TEMPLATE = "studio/operations.html"
CHART_WIDTH, CHART_HEIGHT = 960, 200
OUTCOME_LABELS = {
    "success": "success",
    "transient": "transient",
    "rate_limited": "rate limited",
    "out_of_credits": "out of credits",
    "auth": "auth",
    "rejected": "rejected",
    "config": "config",
    "lost": "lost",
    "interrupted": "interrupted",
}


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    outcome: str
    title: str


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


def chart_shapes(chart: ops.CallChart) -> dict:
    """Return the stacked bars of the calls chart as SVG rectangles and time ticks."""
    slot = CHART_WIDTH / len(chart.bars)
    gap = min(2.0, slot / 4)
    peak = chart.peak or 1
    tz = timezone.get_current_timezone()
    rects, ticks = [], []
    every = 3 if chart.window == "1h" else 36  # a tick each 15 min, or each 3 hours
    for i, bar in enumerate(chart.bars):
        x = i * slot
        base = CHART_HEIGHT
        start = bar.start.astimezone(tz)
        for outcome in ops.CHART_OUTCOMES:
            count = bar.counts.get(outcome, 0)
            if not count:
                continue
            height = CHART_HEIGHT * count / peak
            base -= height
            label = OUTCOME_LABELS.get(outcome, outcome)
            rects.append(
                Rect(
                    x=round(x + gap / 2, 2),
                    y=round(base, 2),
                    width=round(slot - gap, 2),
                    height=round(height, 2),
                    outcome=outcome,
                    title=f"{start:%H:%M}: {count} {label}",
                )
            )
        if i % every == 0:
            ticks.append(Tick(x=round(x, 2), label=f"{start:%H:%M}"))
    return {
        "rects": rects,
        "ticks": ticks,
        "peak": chart.peak,
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "legend": [
            (outcome, OUTCOME_LABELS.get(outcome, outcome), chart.totals.get(outcome, 0))
            for outcome in ops.CHART_OUTCOMES
        ],
    }


@staff_member_required
@require_GET
def operations_page(request: HttpRequest) -> HttpResponse:
    """The whole studio at a glance; its body refreshes itself every 10 s (one request)."""
    window = request.GET.get("window", "1h")
    if window not in ops.WINDOWS:
        window = "1h"
    overview = ops.overview(window=window)
    context = {
        "ov": overview,
        "shapes": chart_shapes(overview.chart),
        "windows": list(ops.WINDOWS),
    }
    template = TEMPLATE + "#ops-body" if request.htmx else TEMPLATE
    return render(request, template, context)


@staff_member_required
@require_POST
def account_resume(request: HttpRequest) -> HttpResponse:
    """Resume a halted provider account: every run it halted continues. Staff need the
    permission the admin's Resume needs: to change provider accounts."""
    if not request.user.has_perm("generation.change_provideraccount"):
        raise PermissionDenied("Resuming an account needs the permission to change accounts.")
    key = request.POST.get("key", "")
    account = ProviderAccount.objects.filter(key=key).first()
    if account is None:
        raise Http404("No such provider account.")
    resumed = services.resume_account(key)
    messages.success(
        request, f"Resumed {account.label}: {resumed} run{'s' if resumed != 1 else ''} continue."
    )
    return redirect("operations")


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and broker answer and a worker cluster is alive, else 503
    with the parts that failed. No sign-in; no project data."""
    report, failing = ops.health()
    if failing:
        report["failing"] = failing
    return JsonResponse(report, status=503 if failing else 200)


@never_cache
@require_GET
def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus text format, for a bearer of STUDIO_METRICS_TOKEN; off when unset."""
    token = settings.STUDIO_METRICS_TOKEN
    if not token:
        raise Http404("Metrics are off: set STUDIO_METRICS_TOKEN.")
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        response = HttpResponse("A bearer token is required.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics.render(), content_type=metrics.CONTENT_TYPE)
