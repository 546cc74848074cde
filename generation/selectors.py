"""Read-side queries: where every page of a project stands, in a constant number of queries."""

from dataclasses import dataclass

from django.db.models import Count, Exists, OuterRef, Q, Subquery

from studio.models import Page, Project

from .models import ACTIVE_STATUSES, Illustration, Run

Status = Illustration.Status


@dataclass(frozen=True)
class Progress:
    pages: int
    illustrated: int
    active: int
    failed: int

    @property
    def missing(self) -> int:
        return self.pages - self.illustrated

    @property
    def to_queue(self) -> int:
        """Pages the Generate Missing button would queue: missing and not already active."""
        return self.missing - self.active

    @property
    def percent(self) -> int:
        return int(100 * self.illustrated / self.pages) if self.pages else 0

    @property
    def complete(self) -> bool:
        """A project is complete only when every page has a complete illustration."""
        return self.pages > 0 and self.illustrated == self.pages


def _annotated_pages(pages):
    jobs = Illustration.objects.filter(page=OuterRef("pk"))
    latest = jobs.order_by("-created_at", "-pk")
    complete = jobs.filter(status=Status.COMPLETE).order_by("-finished_at", "-pk")
    return pages.annotate(
        has_complete=Exists(complete),
        has_active=Exists(jobs.filter(status__in=ACTIVE_STATUSES)),
        latest_status=Subquery(latest.values("status")[:1]),
    )


def project_progress(project: Project) -> Progress:
    """Return the project's page counts, derived from job rows in one query."""
    counts = (
        _annotated_pages(Page.objects.filter(project=project))
        .values("project")
        .annotate(
            pages=Count("pk"),
            illustrated=Count("pk", filter=Q(has_complete=True)),
            active=Count("pk", filter=Q(has_active=True, has_complete=False)),
            failed=Count(
                "pk",
                filter=Q(has_complete=False, has_active=False, latest_status=Status.FAILED),
            ),
        )
        .order_by()
    )
    row = next(iter(counts), None)
    if row is None:
        return Progress(pages=0, illustrated=0, active=0, failed=0)
    return Progress(
        pages=row["pages"],
        illustrated=row["illustrated"],
        active=row["active"],
        failed=row["failed"],
    )


@dataclass
class PageCard:
    page: Page
    job: Illustration | None  # the latest job, whatever its status
    current: Illustration | None  # the latest complete illustration, shown as the picture

    @property
    def state(self) -> str:
        """Return what the card shows: the active job's status, else complete, else why not."""
        if self.job is not None and self.job.is_active:
            return self.job.status
        if self.current is not None:
            return "complete"
        if self.job is not None and self.job.status == Status.FAILED:
            return "rejected" if self.job.failure_reason == "rejected" else "failed"
        return "pending"


def page_cards(project: Project, *, pages=None) -> list[PageCard]:
    """Return one card per page (or per given page), in three queries whatever the count."""
    pages = list(pages if pages is not None else project.pages.all())
    page_ids = [p.pk for p in pages]
    latest_ids = Illustration.objects.filter(page=OuterRef("page")).order_by("-created_at", "-pk")
    current_ids = Illustration.objects.filter(
        page=OuterRef("page"), status=Status.COMPLETE
    ).order_by("-finished_at", "-pk")
    jobs = Illustration.objects.filter(page_id__in=page_ids).filter(
        Q(pk=Subquery(latest_ids.values("pk")[:1])) | Q(pk=Subquery(current_ids.values("pk")[:1]))
    )
    latest: dict[int, Illustration] = {}
    current: dict[int, Illustration] = {}
    for job in jobs:
        if job.status == Status.COMPLETE:
            known = current.get(job.page_id)
            if known is None or (job.finished_at, job.pk) > (known.finished_at, known.pk):
                current[job.page_id] = job
        known = latest.get(job.page_id)
        if known is None or (job.created_at, job.pk) > (known.created_at, known.pk):
            latest[job.page_id] = job
    return [PageCard(page=p, job=latest.get(p.pk), current=current.get(p.pk)) for p in pages]


def latest_run(project: Project) -> Run | None:
    """Return the project's most recent run (open or over), or None before the first."""
    return Run.objects.filter(project=project).order_by("-created_at", "-pk").first()
