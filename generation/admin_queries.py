"""Annotations that let admin lists show progress without a query per row."""

from django.db.models import Count, Exists, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce

from studio.models import Page

from .models import ACTIVE_STATUSES, Illustration, Run

Status = Illustration.Status


def _count_pages(condition) -> Coalesce:
    counted = (
        Page.objects.filter(project=OuterRef("pk"))
        .filter(condition)
        .order_by()
        .values("project")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def with_progress(projects):
    """Annotate projects with page counts and their latest run's state, in one query."""
    jobs = Illustration.objects.filter(page=OuterRef("pk"))
    complete = Exists(jobs.filter(status=Status.COMPLETE))
    active = Exists(jobs.filter(status__in=ACTIVE_STATUSES))
    latest_job = Subquery(jobs.order_by("-created_at", "-pk").values("pk")[:1])
    # Missing, not on its way, and its latest job failed: what "Retry failed" would queue.
    failed = (
        ~complete
        & ~active
        & Exists(Illustration.objects.filter(pk=latest_job, status=Status.FAILED))
    )
    runs = Run.objects.filter(project=OuterRef("pk")).order_by("-created_at", "-pk")
    return projects.annotate(
        page_count=_count_pages(Q()),
        illustrated_count=_count_pages(complete),
        failed_count=_count_pages(failed),
        run_state=Subquery(runs.values("state")[:1]),
    )
