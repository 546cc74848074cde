"""The one place that changes runs and queues jobs: views, admin, commands and tasks call it.

Services change run state and *queued* jobs only. A job a worker has claimed belongs to
that worker until it ends or its lease expires; the worker notices a stopped, paused or
halted run before its next call and gives the job back.
"""

import logging
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.tasks import async_task

from studio.models import Page, Project

from .engine import run_is, settle_run
from .models import ACTIVE_STATUSES, OPEN_RUN_STATES, GenerationAttempt, Illustration, Run

logger = logging.getLogger(__name__)

Status = Illustration.Status


@dataclass(frozen=True)
class Queued:
    run: Run | None
    count: int
    resumed: bool = False  # a paused or halted run was set running again


def enqueue_jobs(run_id: int, count: int) -> None:
    """Hand the broker one task per job; each task claims the run's most urgent job."""
    for _ in range(count):
        async_task(
            "generation.tasks.run_next_job",
            run_id,
            task_name=f"run-{run_id}-job",
            group=f"run-{run_id}",
        )


def _enqueue_on_commit(run: Run, count: int) -> None:
    if count:
        run_id = run.pk
        transaction.on_commit(lambda: enqueue_jobs(run_id, count))


def missing_pages(project: Project):
    """Return the project's pages with no complete illustration and no active job."""
    return project.pages.exclude(
        Exists(
            Illustration.objects.filter(
                page=OuterRef("pk"), status__in=(Status.COMPLETE, *ACTIVE_STATUSES)
            )
        )
    )


def _queue_pages(project: Project, page_ids: list[int], requested_by) -> Queued:
    """Add one job per page to the project's open run (or a new one), set it running, and
    hand the broker their tasks. Call with the project locked.

    A paused or halted run resumes, since the editor asked for work, and its waiting jobs
    get their tasks again.
    """
    run = Run.objects.select_for_update().filter(project=project, state__in=OPEN_RUN_STATES).first()
    resumed = run is not None and run.state != Run.State.RUNNING
    if run is None:
        if not page_ids:
            return Queued(run=None, count=0)
        run = Run.objects.create(project=project, requested_by=requested_by)
    elif resumed:
        run.state = Run.State.RUNNING
        run.halt_reason = ""
        run.message = ""
        run.consecutive_failures = 0
        run.finished_at = None
        run.save()
    Illustration.objects.bulk_create(Illustration(page_id=pk, run=run) for pk in page_ids)
    tasks = run.illustrations.filter(status=Status.QUEUED).count() if resumed else len(page_ids)
    _enqueue_on_commit(run, tasks)
    return Queued(run=run, count=len(page_ids), resumed=resumed)


def _lock(project_id: int) -> None:
    # Serialises queuing for one project, so two requests cannot queue the same pages.
    Project.objects.select_for_update().filter(pk=project_id).first()


@transaction.atomic
def generate_missing(*, project: Project, requested_by=None) -> Queued:
    """Queue one job per page without a complete illustration or an active job.

    Idempotent: pages already queued or complete are left alone, so a double click queues
    nothing more. A halted or paused run is resumed.
    """
    _lock(project.pk)
    pages = list(missing_pages(project).values_list("pk", flat=True))
    return _queue_pages(project, pages, requested_by)


@transaction.atomic
def retry_failed(*, project: Project, requested_by=None) -> Queued:
    """Queue a fresh job, with fresh attempts, for every page whose latest job failed."""
    _lock(project.pk)
    pages = list(failed_pages(project).values_list("pk", flat=True))
    if not pages:
        return Queued(run=None, count=0)
    return _queue_pages(project, pages, requested_by)


def failed_pages(project: Project):
    """Return pages that are missing, not active, and whose latest job failed."""
    latest = Illustration.objects.filter(page=OuterRef("pk")).order_by("-created_at", "-pk")
    return (
        missing_pages(project)
        .annotate(latest_status=latest.values("status")[:1])
        .filter(latest_status=Status.FAILED)
    )


@transaction.atomic
def stop(*, project: Project) -> Run | None:
    """Stop the open run: calls in flight finish, queued jobs are canceled, work is kept."""
    run = Run.objects.select_for_update().filter(project=project, state__in=OPEN_RUN_STATES).first()
    if run is None:
        return None
    now = timezone.now()
    run.illustrations.filter(status=Status.QUEUED).update(
        status=Status.CANCELED, finished_at=now, updated_at=now
    )
    working = run.illustrations.filter(status__in=(Status.GENERATING, Status.RETRYING)).exists()
    run.state = Run.State.STOPPING if working else Run.State.STOPPED
    run.finished_at = None if working else now
    run.save()
    return run


@transaction.atomic
def pause(*, project: Project) -> Run | None:
    """Pause the running run: calls in flight finish, the queue is kept for Resume."""
    run = Run.objects.select_for_update().filter(project=project, state=Run.State.RUNNING).first()
    if run is None:
        return None
    run.state = Run.State.PAUSED
    run.save()
    return run


@transaction.atomic
def resume(*, project: Project) -> Run | None:
    """Resume a paused or halted run: the same missing pages continue where they were."""
    run = (
        Run.objects.select_for_update()
        .filter(project=project, state__in=(Run.State.PAUSED, Run.State.HALTED))
        .first()
    )
    if run is None:
        return None
    run.state = Run.State.RUNNING
    run.halt_reason = ""
    run.message = ""
    run.consecutive_failures = 0
    run.save()
    _enqueue_on_commit(run, run.illustrations.filter(status=Status.QUEUED).count())
    return run


@transaction.atomic
def queue_page(*, page: Page, requested_by=None, regenerate: bool = False) -> Queued:
    """Queue one job for a page that has none active: a missing page (retry), or with
    regenerate, also a complete one, whose picture stays until the new one is complete."""
    _lock(page.project_id)
    jobs = page.illustrations.all()
    if jobs.filter(status__in=ACTIVE_STATUSES).exists():
        return Queued(run=None, count=0)
    if not regenerate and jobs.filter(status=Status.COMPLETE).exists():
        return Queued(run=None, count=0)
    return _queue_pages(page.project, [page.pk], requested_by)


@transaction.atomic
def prioritize(*, page: Page, requested_by=None) -> bool:
    """Move the page's job to the front of its run, queuing one if the page is missing.
    Return whether the page is now first in line."""
    job = page.illustrations.filter(status=Status.QUEUED).first()
    if job is None:
        if not queue_page(page=page, requested_by=requested_by).count:
            return False
        job = page.illustrations.get(status=Status.QUEUED)
    top = (
        Illustration.objects.filter(run_id=job.run_id, status=Status.QUEUED)
        .order_by("-priority")
        .values_list("priority", flat=True)
        .first()
    ) or 0
    updated = Illustration.objects.filter(pk=job.pk, status=Status.QUEUED).update(
        priority=top + 1, updated_at=timezone.now()
    )
    return bool(updated)


def top_up_broker(*, now) -> int:
    """Make the broker hold at least one waiting task per due queued job of a running run.
    Return how many tasks were added.

    Tasks are interchangeable (each claims its run's most urgent job), so counting is
    enough. A task can vanish with a killed cluster that had fetched it, or sit locked in
    the ORM broker until its retry time; the broker cannot tell those from tasks a live
    cluster has fetched, so this may over-deliver, which is harmless: a task that finds
    nothing to claim calls nothing.
    """
    # Deferred jobs (a long Retry-After) whose time has come become claimable again.
    Illustration.objects.filter(status=Status.QUEUED, next_attempt_at__lte=now).update(
        next_attempt_at=None
    )
    due_by_run = dict(
        Illustration.objects.filter(status=Status.QUEUED, run__state=Run.State.RUNNING)
        .filter(next_attempt_at__isnull=True)
        .values("run")
        .annotate(due=Count("pk"))
        .values_list("run", "due")
        .order_by("run")
    )
    deficit = sum(due_by_run.values()) - get_broker().queue_size()
    added = 0
    for run_id, due in due_by_run.items():
        count = min(due, deficit - added)
        if count <= 0:
            break
        enqueue_jobs(run_id, count)
        added += count
    return added


def sweep(*, now=None) -> dict[str, int]:
    """Repair what dead workers and lost broker tasks left behind. Return counts.

    1. Jobs whose lease expired go back to queued (canceled if their run stopped); the call
       their worker had in flight is recorded as lost.
    2. The broker gets a task for every due queued job it holds no waiting task for.
    3. Runs with nothing left are closed.
    """
    now = now or timezone.now()
    expired = Illustration.objects.filter(
        status__in=(Status.GENERATING, Status.RETRYING), lease_expires_at__lt=now
    )
    expired_jobs = dict(expired.values_list("pk", "run_id"))
    GenerationAttempt.objects.filter(
        illustration_id__in=expired_jobs, outcome=GenerationAttempt.Outcome.IN_FLIGHT
    ).update(
        outcome=GenerationAttempt.Outcome.LOST,
        finished_at=now,
        message="The worker stopped responding during this call.",
    )
    stopped = Q(run__isnull=True) | run_is(Run.State.STOPPING, Run.State.STOPPED)
    canceled = (
        expired.filter(pk__in=expired_jobs)
        .filter(stopped)
        .update(
            status=Status.CANCELED,
            claimed_by="",
            lease_expires_at=None,
            finished_at=now,
            updated_at=now,
        )
    )
    requeued = expired.filter(pk__in=expired_jobs).update(
        status=Status.QUEUED,
        claimed_by="",
        lease_expires_at=None,
        next_attempt_at=None,
        updated_at=now,
    )

    reenqueued = top_up_broker(now=now)
    for run_id in Run.objects.filter(state__in=(Run.State.RUNNING, Run.State.STOPPING)).values_list(
        "pk", flat=True
    ):
        settle_run(run_id)
    if canceled or requeued or reenqueued:
        logger.info(
            "Sweep: %s requeued, %s canceled, %s re-enqueued", requeued, canceled, reenqueued
        )
    return {"requeued": requeued, "canceled": canceled, "reenqueued": reenqueued}
