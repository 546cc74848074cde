"""The engine: claim a job, call the image service with retries, record every attempt.

Every state change a worker makes is a compare-and-set UPDATE on the job row that names
the worker's claim, so a worker that lost its lease, or whose run was stopped, paused or
halted, changes nothing and calls nothing. Run-level changes (stop, pause, resume) belong
to generation.services; the engine only halts a run when the service says retrying
cannot help.
"""

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, Subquery
from django.utils import timezone
from tenacity import Retrying, retry_if_exception, stop_after_attempt

from .kinds import KINDS, JobKind
from .limits import BudgetReached, Gate, SystemClock, provider_key
from .models import ACTIVE_STATUSES, GenerationAttempt, Job, Run
from .pricing import money
from .providers.base import ProviderError, RateLimited, Transient
from .retry import Interrupted, RetryPolicy, is_retryable

logger = logging.getLogger(__name__)

Status = Job.Status
Outcome = GenerationAttempt.Outcome

HALT_MESSAGES = {
    Run.HaltReason.OUT_OF_CREDITS: (
        "The {service} says the account is out of credits{status}. Add credits, then press Resume."
    ),
    Run.HaltReason.AUTH: (
        "The {service} refused the API key{status}. Check OPENAI_API_KEY, then press Resume."
    ),
    Run.HaltReason.OUTAGE: (
        "The {service} failed {count} times in a row{status}; it looks like an outage. "
        "Press Resume when it is back."
    ),
}


def run_is(*states: str) -> Exists:
    """Return a condition on a job row: its run is in one of the states.

    Conditions in compare-and-set UPDATEs must not join: Django turns a joined UPDATE into
    `WHERE id IN (SELECT ...)`, and PostgreSQL does not re-check such a subquery against
    the row it waited for, so two workers could both "win" the same job.
    """
    return Exists(Run.objects.filter(pk=OuterRef("run_id"), state__in=states))


class Deferred(Exception):
    """The service asked for a longer wait than a worker should sleep: the job goes back to
    the queue with the time of its next try, and the sweep hands it out when it is due."""

    def __init__(self, error: ProviderError):
        super().__init__(error.message)
        self.error = error


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def run_next_job(
    run_id: int,
    kind: str = "illustration",
    *,
    sleep: Callable[[float], None] | None = None,
    clock=None,
) -> int | None:
    """Claim the run's most urgent queued job of a kind and work it to an end. Return its
    id, or None when there was nothing to claim (another worker has it, or the run is not
    running)."""
    worker = JobWorker(KINDS[kind], sleep=sleep, clock=clock)
    job = worker.claim_next(run_id)
    if job is not None:
        worker.work(job)
    # While jobs of this kind are still active the run cannot be over: skip the full check.
    if not worker.model.objects.filter(run_id=run_id, status__in=ACTIVE_STATUSES).exists():
        settle_run(run_id)
    return job.pk if job is not None else None


def run_has_active_jobs(run_id: int) -> bool:
    return any(
        kind.model.objects.filter(run_id=run_id, status__in=ACTIVE_STATUSES).exists()
        for kind in KINDS.values()
    )


def settle_run(run_id: int) -> None:
    """Close the run if it has nothing left: running → finished, stopping → stopped."""
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.state not in (Run.State.RUNNING, Run.State.STOPPING):
            return
        if run_has_active_jobs(run_id):
            return
        run.state = Run.State.FINISHED if run.state == Run.State.RUNNING else Run.State.STOPPED
        run.finished_at = timezone.now()
        run.save(update_fields=["state", "finished_at", "updated_at"])


def halt_run(
    run_id: int,
    *,
    reason: str,
    error: ProviderError | None,
    count: int = 0,
    service: str = "image service",
    message: str = "",
) -> bool:
    """Halt a running run for a reason retrying cannot fix. Return whether this call halted it."""
    if not message:
        status = f" (HTTP {error.http_status})" if error is not None and error.http_status else ""
        message = HALT_MESSAGES[reason].format(status=status, count=count, service=service)
        if error is not None and error.message:
            message += f" The service said: {error.message}"
    halted = Run.objects.filter(pk=run_id, state=Run.State.RUNNING).update(
        state=Run.State.HALTED, halt_reason=reason, message=message, updated_at=timezone.now()
    )
    if halted:
        logger.warning("Run %s halted (%s): %s", run_id, reason, message)
    return bool(halted)


class JobWorker:
    """One claim on one job: every attempt at it, and how it ends."""

    def __init__(self, kind: JobKind, *, sleep: Callable[[float], None] | None = None, clock=None):
        self.kind = kind
        self.clock = clock or SystemClock()
        self.gate: Gate | None = None
        self.model = kind.model
        self.id = new_worker_id()
        self.policy = RetryPolicy.from_settings()
        self.lease = timedelta(seconds=settings.STUDIO_LEASE_SECONDS)
        self.sleep = sleep or self.wait_unless_interrupted
        self.provider = None
        self.job: Job | None = None
        self.recorded: dict = {}
        self.attempt_number = 0

    # --- claiming -------------------------------------------------------------------

    def claim_next(self, run_id: int) -> Job | None:
        """Claim the highest-priority due queued job of a running run with one UPDATE."""
        for _ in range(10):
            now = timezone.now()
            candidate = (
                self.model.objects.filter(run_id=run_id, status=Status.QUEUED)
                .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
                .order_by(*self.kind.claim_order)
                .values("pk")[:1]
            )
            won = self.model.objects.filter(
                run_is(Run.State.RUNNING), pk=Subquery(candidate), status=Status.QUEUED
            ).update(
                status=Status.GENERATING,
                claimed_by=self.id,
                lease_expires_at=now + self.lease,
                next_attempt_at=None,
                started_at=now,
                updated_at=now,
            )
            if won:
                attempts = GenerationAttempt.objects.filter(
                    **{self.kind.attempt_field: OuterRef("pk")}
                ).order_by("-number")
                return (
                    self.model.objects.select_related("run", *self.kind.select_related)
                    .annotate(
                        last_attempt=Subquery(attempts.values("number")[:1]),
                        **self.kind.claim_annotations(),
                    )
                    .get(claimed_by=self.id, status=Status.GENERATING)
                )
            if (
                not candidate.exists()
                or not Run.objects.filter(pk=run_id, state=Run.State.RUNNING).exists()
            ):
                return None
            # Another worker took that candidate between our read and write: try the next.
        return None

    def mine(self):
        """Return the job's row, only while this worker holds it."""
        return self.model.objects.filter(
            pk=self.job.pk, claimed_by=self.id, status__in=(Status.GENERATING, Status.RETRYING)
        )

    # --- working --------------------------------------------------------------------

    @property
    def failures_seen(self) -> bool:
        """Whether the run may count transient failures in a row that a success resets."""
        return self.job.run.consecutive_failures > 0 or self.job.attempts_made > 0

    def work(self, job: Job) -> None:
        """Call the service until the job completes, fails, or is interrupted."""
        self.job = job
        try:
            self.provider = self.kind.provider()
        except LookupError as error:  # no provider configured for this kind
            self._fail(ProviderError(str(error)))
            return
        prompt, self.recorded = self.kind.prepare(job, self.provider)
        self.gate = Gate(
            provider=provider_key(self.provider.name, getattr(self.provider, "model", "")),
            project=self.kind.project(job),
            price=self.kind.price(self.provider),
            lease=settings.STUDIO_LEASE_SECONDS,
            clock=self.clock,
        )
        self.attempt_number = job.last_attempt or 0
        remaining = max(1, self.policy.max_attempts - job.attempts_made)
        retrying = Retrying(
            stop=stop_after_attempt(remaining),
            wait=self.policy.wait,
            retry=retry_if_exception(is_retryable),
            before_sleep=self._mark_retrying,
            sleep=self.sleep,
            reraise=True,
        )
        try:
            result = retrying(self._attempt, prompt)
        except Interrupted:
            self._release()
            return
        except Deferred as deferred:
            self._defer(deferred.error)
            return
        except ProviderError as error:
            self._fail(error)
            return
        if self.kind.complete(self, result, timezone.now()) and self.failures_seen:
            Run.objects.filter(pk=self.job.run_id, consecutive_failures__gt=0).update(
                consecutive_failures=0
            )

    def _attempt(self, prompt: str):
        """Make one call to the service, recorded as one GenerationAttempt row."""
        now = timezone.now()
        renewed = (
            self.mine()
            .filter(run_is(Run.State.RUNNING))
            .update(
                status=Status.GENERATING,
                lease_expires_at=now + self.lease,
                next_attempt_at=None,
                updated_at=now,
                # What is sent is recorded with the first renewal, saving a query.
                **self.recorded,
            )
        )
        self.recorded = {}
        if not renewed:
            raise Interrupted()
        slot = self._take_slot()
        try:
            self.attempt_number += 1
            number = self.attempt_number
            attempt = GenerationAttempt.objects.create(
                **{self.kind.attempt_field: self.job}, number=number, started_at=timezone.now()
            )
            started = time.monotonic()
            try:
                result = self.kind.call(self, prompt, number)
            except Interrupted:
                # Stopped while waiting on the service (a clip being made): the service's
                # job id is kept, so whoever resumes this job polls the same one.
                attempt.finished_at = timezone.now()
                attempt.outcome = Outcome.INTERRUPTED
                attempt.message = "Stopped while waiting for the service; resuming polls it again."
                attempt.save()
                raise
            except ProviderError as error:
                self._record(attempt, started, error=error)
                if isinstance(error, RateLimited) and error.retry_after:
                    # Every worker waits, not only this one.
                    self.gate.cool_down(error.retry_after, error.message)
                self._after_failure(error)
                if self._should_defer(error):
                    raise Deferred(error) from error
                raise
            except Exception as error:  # a bug or an unexpected library error: still one row
                wrapped = Transient(f"unexpected error: {error!r}")
                self._record(attempt, started, error=wrapped)
                self._after_failure(wrapped)
                raise wrapped from error
            self._record(attempt, started, result=result)
            return result
        finally:
            Gate.release(slot)

    def _take_slot(self):
        """Wait until the shared limits allow a call; halt the run if the budget would be
        passed; give up (Interrupted) when the run stops, pauses or halts meanwhile."""
        try:
            slot = self.gate.acquire(still_wanted=self.still_wanted)
        except BudgetReached as reached:
            halt_run(
                self.job.run_id,
                reason=Run.HaltReason.BUDGET,
                error=None,
                message=(
                    f"The next illustration would take this project past its budget of "
                    f"{money(reached.budget)} ({money(reached.spent)} spent, "
                    f"{money(reached.price)} each). Raise the budget in Settings, then "
                    f"press Resume."
                ),
            )
            raise Interrupted() from None
        if slot is None:
            raise Interrupted()
        return slot

    def still_wanted(self) -> bool:
        """Renew the lease while waiting (for a slot, or on a long job at the service);
        False once the job is not ours."""
        now = timezone.now()
        return bool(
            self.mine().filter(run_is(Run.State.RUNNING)).update(lease_expires_at=now + self.lease)
        )

    def _record(self, attempt, started, *, result=None, error=None) -> None:
        attempt.finished_at = timezone.now()
        attempt.duration_ms = int((time.monotonic() - started) * 1000)
        if error is None:
            attempt.outcome = Outcome.SUCCESS
            attempt.cost = self.gate.price
            attempt.http_status = result.http_status
            attempt.provider_request_id = result.request_id[:120]
        else:
            attempt.outcome = error.outcome
            attempt.http_status = error.http_status
            attempt.error_code = (error.code or "")[:80]
            attempt.message = error.message[:2000]
            attempt.retry_after = error.retry_after
            attempt.provider_request_id = (error.request_id or "")[:120]
        attempt.save()

    def _after_failure(self, error: ProviderError) -> None:
        """Count the attempt against the job unless it halted the run; halt when needed."""
        run_id = self.job.run_id
        service = self.kind.service
        if error.halts_run:
            halt_run(run_id, reason=error.outcome, error=error, service=service)
            return  # a halting attempt never counts against the job
        if error.retryable:
            Run.objects.filter(pk=run_id).update(consecutive_failures=F("consecutive_failures") + 1)
            failures = Run.objects.filter(pk=run_id).values_list("consecutive_failures", flat=True)
            count = failures.first() or 0
            if count >= settings.STUDIO_OUTAGE_THRESHOLD:
                halted = halt_run(
                    run_id,
                    reason=Run.HaltReason.OUTAGE,
                    error=error,
                    count=count,
                    service=service,
                )
                if halted:
                    raise Interrupted()
        self.model.objects.filter(pk=self.job.pk).update(
            attempts_made=F("attempts_made") + 1, updated_at=timezone.now()
        )
        self.job.attempts_made += 1

    def _should_defer(self, error: ProviderError) -> bool:
        return (
            error.retryable
            and (error.retry_after or 0) > self.policy.backoff_max
            and self.job.attempts_made < self.policy.max_attempts
        )

    def _mark_retrying(self, retry_state) -> None:
        wait = retry_state.upcoming_sleep
        now = timezone.now()
        self.mine().update(
            status=Status.RETRYING,
            next_attempt_at=now + timedelta(seconds=wait),
            lease_expires_at=now + timedelta(seconds=wait) + self.lease,
            updated_at=now,
        )

    def wait_unless_interrupted(self, seconds: float) -> None:
        """Sleep between attempts, waking early when the run stops, pauses or halts."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            if not self.mine().filter(run_is(Run.State.RUNNING)).exists():
                return

    # --- endings --------------------------------------------------------------------

    def mark_complete(self, now, **fields) -> int:
        """Mark the job complete if this worker still holds it; return rows updated."""
        return self.mine().update(
            status=Status.COMPLETE,
            attempts_made=F("attempts_made") + 1,
            claimed_by="",
            lease_expires_at=None,
            failure_reason="",
            error_message="",
            finished_at=now,
            updated_at=now,
            **fields,
        )

    def _fail(self, error: ProviderError) -> None:
        if error.halts_run:
            self._release()
            return
        reason = "rejected" if error.outcome == Outcome.REJECTED else "exhausted"
        now = timezone.now()
        self.mine().update(
            status=Status.FAILED,
            failure_reason=reason,
            error_message=error.message[:2000],
            claimed_by="",
            lease_expires_at=None,
            next_attempt_at=None,
            finished_at=now,
            updated_at=now,
        )

    def _defer(self, error: ProviderError) -> None:
        now = timezone.now()
        self.mine().update(
            status=Status.QUEUED,
            claimed_by="",
            lease_expires_at=None,
            next_attempt_at=now + timedelta(seconds=error.retry_after),
            updated_at=now,
        )

    def _release(self) -> None:
        """Give the job back: queued again if its run may resume, canceled if it stopped."""
        state = Run.objects.filter(pk=self.job.run_id).values_list("state", flat=True).first()
        now = timezone.now()
        if state in (Run.State.STOPPING, Run.State.STOPPED, None):
            self.mine().update(
                status=Status.CANCELED,
                claimed_by="",
                lease_expires_at=None,
                next_attempt_at=None,
                finished_at=now,
                updated_at=now,
            )
        else:
            self.mine().update(
                status=Status.QUEUED,
                claimed_by="",
                lease_expires_at=None,
                next_attempt_at=None,
                updated_at=now,
            )
