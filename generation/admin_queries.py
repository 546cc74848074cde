"""Annotations that let admin lists show progress without a query per row."""

from decimal import Decimal

from django.db.models import (
    Count,
    DecimalField,
    Exists,
    IntegerField,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce

from studio.models import Page

from .models import ACTIVE_STATUSES, GenerationAttempt, Illustration, Run

Status = Illustration.Status


def _project_pages():
    """Return the pages of the outer project, each annotated with where it stands."""
    jobs = Illustration.objects.filter(page=OuterRef("pk"))
    return Page.objects.filter(project=OuterRef("pk")).annotate(
        has_complete=Exists(jobs.filter(status=Status.COMPLETE)),
        has_active=Exists(jobs.filter(status__in=ACTIVE_STATUSES)),
        latest_status=Subquery(jobs.order_by("-pk").values("status")[:1]),
    )


def _count(pages) -> Coalesce:
    counted = pages.order_by().values("project").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def with_progress(projects):
    """Annotate projects with page counts and their latest run's state, in one query."""
    pages = _project_pages()
    # Missing, not on its way, and its latest job failed: what "Retry failed" would queue.
    failed = Q(has_complete=False, has_active=False, latest_status=Status.FAILED)
    runs = Run.objects.filter(project=OuterRef("pk")).order_by("-created_at", "-pk")
    return projects.annotate(
        page_count=_count(pages),
        illustrated_count=_count(pages.filter(has_complete=True)),
        failed_count=_count(pages.filter(failed)),
        run_state=Subquery(runs.values("state")[:1]),
        spent=Coalesce(
            Subquery(
                GenerationAttempt.objects.filter(illustration__page__project=OuterRef("pk"))
                .order_by()
                .values("illustration__page__project")
                .annotate(total=Sum("cost"))
                .values("total"),
                output_field=DecimalField(max_digits=12, decimal_places=4),
            ),
            Value(Decimal(0)),
            output_field=DecimalField(max_digits=12, decimal_places=4),
        ),
    )
