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

from studio.models import Project

from .engine import run_is, settle_run
from .models import ACTIVE_STATUSES, OPEN_RUN_STATES, GenerationAttempt, Illustration, Run

logger = logging.getLogger(__name__)

Status = Illustration.Status


@dataclass(frozen=True)
class Queued:
    run: Run | None
    count: int


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


def _open_run_for_work(project: Project, requested_by) -> Run:
    """Return the project's open run, set running; create one when there is none."""
    run = Run.objects.select_for_update().filter(project=project, state__in=OPEN_RUN_STATES).first()
    if run is None:
        return Run.objects.create(project=project, requested_by=requested_by)
    run.state = Run.State.RUNNING
    run.halt_reason = ""
    run.message = ""
    run.consecutive_failures = 0
    run.finished_at = None
    run.save()
    return run


@transaction.atomic
def generate_missing(*, project: Project, requested_by=None) -> Queued:
    """Queue one job per page without a complete illustration or an active job.

    Idempotent: pages already queued or complete are left alone, so a double click queues
    nothing more. A halted or paused run is resumed, since the editor asked for work.
    """
    # Lock the project so two requests cannot both queue the same pages.
    Project.objects.select_for_update().filter(pk=project.pk).first()
    pages = list(missing_pages(project).values_list("pk", flat=True))
    open_run = Run.objects.filter(project=project, state__in=OPEN_RUN_STATES).first()
    if not pages and open_run is None:
        return Queued(run=None, count=0)
    run = _open_run_for_work(project, requested_by)
    Illustration.objects.bulk_create(Illustration(page_id=pk, run=run) for pk in pages)
    waiting = run.illustrations.filter(status=Status.QUEUED).count()
    _enqueue_on_commit(run, waiting)
    return Queued(run=run, count=len(pages))


@transaction.atomic
def retry_failed(*, project: Project, requested_by=None) -> Queued:
    """Queue a fresh job for every page whose latest job failed, with fresh attempts."""
    Project.objects.select_for_update().filter(pk=project.pk).first()
    pages = list(failed_pages(project).values_list("pk", flat=True))
    if not pages:
        return Queued(run=None, count=0)
    run = _open_run_for_work(project, requested_by)
    Illustration.objects.bulk_create(Illustration(page_id=pk, run=run) for pk in pages)
    waiting = run.illustrations.filter(status=Status.QUEUED).count()
    _enqueue_on_commit(run, waiting)
    return Queued(run=run, count=len(pages))


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


def prioritize(*, illustration: Illustration) -> bool:
    """Move a queued job to the front of its run. Return whether it was queued."""
    top = (
        Illustration.objects.filter(run_id=illustration.run_id)
        .order_by("-priority")
        .values_list("priority", flat=True)
        .first()
    ) or 0
    return bool(
        Illustration.objects.filter(pk=illustration.pk, status=Status.QUEUED).update(
            priority=top + 1
        )
    )


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
