"""Deliveries from the services that call back when a job ends (Replicate, fal).

A verified delivery (generation.providers.webhooks) that says a service's job has ended
wakes the studio's job waiting for it: awaiting → queued, due at once, and a task for one
worker, which fetches the result through the same engine path a poll takes (one look at
the service's job, the download, the picture kept, the charge confirmed under the call
that created it: once). The delivery's body is never trusted for the picture itself.

Every delivery's id is stored (unique), so one the service repeats is applied once. A job
whose webhook never comes is woken by the sweep once it is overdue (wake_overdue).
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction

from .clock import db_now
from .kinds import KINDS, _cancel
from .models import GenerationAttempt, Job, WebhookDelivery
from .providers.webhooks import WebhookRefused, delivered_job, verify
from .runs import enqueue_jobs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str


def _find(job_id: str):
    """Return (kind, job) waiting for the service's job id, or (None, None)."""
    for kind in KINDS.values():
        job = kind.model.objects.filter(provider_job_id=job_id).order_by("-pk").first()
        if job is not None:
            return kind, job
    return None, None


def _wake(kind, job, *, overdue: bool = False, now=None) -> bool:
    """Wake the awaiting job and hand a worker a task for it (once this commits); return
    whether it woke (False: not awaiting, or not yet overdue)."""
    rows = kind.model.objects.filter(pk=job.pk, provider_job_id=job.provider_job_id)
    if not rows.wake(overdue=overdue, now=now):
        return False
    run_id, name = job.run_id, kind.name
    if run_id is not None:
        transaction.on_commit(lambda: enqueue_jobs(run_id, 1, name))
    return True


def receive(service: str, headers: Mapping, body: bytes, *, now=None) -> Answer:
    """Verify and apply one delivery; return the answer for the service (4xx with the
    reason for anything unproven or unknown: nothing changes then)."""
    try:
        delivery_id = verify(service, headers, body, now=now)
        job_id, status, ended = delivered_job(service, body)
    except WebhookRefused as refused:
        logger.warning("Refused a %s webhook: %s", service, refused.reason)
        return Answer(refused.status, refused.reason)
    with transaction.atomic():
        kind, job = _find(job_id)
        early = False
        if job is None and not GenerationAttempt.objects.filter(provider_job_id=job_id).exists():
            # A fast service's job can end, and its delivery come, before the worker that
            # created it has read the create's answer and stored the id: with a call still
            # waiting for its answer, the delivery is kept for that worker, who wakes the
            # job once it stores the id (wake_if_delivered). Otherwise nothing of ours
            # made it.
            if not _a_create_awaits_its_answer():
                return Answer(404, f"unknown job {job_id!r}: the studio created no such job")
            early = True
        try:
            with transaction.atomic():
                delivery = WebhookDelivery.objects.create(
                    service=service,
                    delivery_id=delivery_id[:120],
                    provider_job_id=job_id,
                    status=status,
                    ended=ended,
                )
        except IntegrityError:
            # The service repeats a delivery whose answer it did not get: applied once.
            return Answer(200, f"already received ({delivery_id}): applied once")
        if not ended:
            outcome = "not its end"
        elif early:
            outcome = "recorded: the call that made it is still reading its answer"
        elif job is None:
            outcome = "nothing waits for it (the job started over or was canceled)"
        elif _wake(kind, job):
            outcome = "woken"
        elif job.status in (Job.Status.GENERATING, Job.Status.RETRYING):
            outcome = "recorded: its worker wakes it"  # wake_if_delivered
        else:
            outcome = f"nothing waits for it (the job is {job.status})"
        WebhookDelivery.objects.filter(pk=delivery.pk).update(outcome=outcome[:120])
    return Answer(200, outcome)


def _a_create_awaits_its_answer() -> bool:
    """Whether some call is still waiting for its answer with no service job id stored yet
    (started within two provider timeouts: a call older than that has ended, or its worker
    is gone and the sweep takes the job back)."""
    since = db_now() - timedelta(seconds=2 * float(settings.STUDIO_PROVIDER_TIMEOUT))
    return GenerationAttempt.objects.filter(
        outcome=GenerationAttempt.Outcome.IN_FLIGHT, provider_job_id="", started_at__gte=since
    ).exists()


def wake_if_delivered(kind, job) -> bool:
    """Wake a job that has just started awaiting if its webhook came first (a fast
    service): the delivery found it still held by its worker. Return whether it woke."""
    came = WebhookDelivery.objects.filter(provider_job_id=job.provider_job_id, ended=True)
    if not job.provider_job_id or not came.exists():
        return False
    with transaction.atomic():
        return _wake(kind, job)


def wake_overdue(*, now=None) -> int:
    """Wake every awaiting job whose webhook is overdue, so a worker polls it (the sweep's,
    every beat). Return how many woke."""
    now = now or db_now()
    woken = 0
    for kind in KINDS.values():
        late = kind.model.objects.filter(status=Job.Status.AWAITING, next_attempt_at__lte=now)
        for job in late.only("pk", "run_id", "provider_job_id"):
            with transaction.atomic():
                woken += _wake(kind, job, overdue=True, now=now)
    if woken:
        logger.info("Woke %s jobs whose webhook is overdue: polling them", woken)
    return woken


def cancel_awaiting(kind, jobs) -> list[tuple[str, int, str]]:
    """Stop: cancel the run's jobs waiting at the service. Return (kind, job id, service
    job id) of each, for cancel_at_service once this commits."""
    waiting = list(jobs.filter(status=Job.Status.AWAITING).values_list("pk", "provider_job_id"))
    if not waiting:
        return []
    jobs.filter(pk__in=[pk for pk, _ in waiting]).cancel_awaiting()
    return [(kind.name, pk, job_id) for pk, job_id in waiting if job_id]


def cancel_at_service(canceled: list) -> None:
    """Ask the service to stop each canceled job's own job (a django-q2 task: a web
    request never waits on a service). A job it cannot cancel ends there by itself."""
    for name, pk, job_id in canceled:
        kind = KINDS[name]
        job = kind.model.objects.select_related(*kind.select_related).filter(pk=pk).first()
        if job is None:
            continue
        try:
            provider = kind.provider(job)
        except LookupError:
            continue
        logger.info("Stop: %s job %s at %s: %s", name, pk, provider.name, _cancel(provider, job_id))
