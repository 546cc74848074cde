"""The engine: claim a job, call the image service with retries, record every attempt.

Every state change a worker makes is a compare-and-set UPDATE on the job row that names
the worker's claim, so a worker that lost its lease, or whose run was stopped, paused or
halted, changes nothing and calls nothing. Run-level changes (stop, pause, resume) belong
to generation.services; the engine only halts a run when the service says retrying
cannot help.
"""

import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import OuterRef, Q, Subquery
from django.db.models.functions import Now
from tenacity import Retrying, retry_if_exception

from studio.models import Project

from . import accounts, catalogue, fairness, ledger, liveness, logs, prepared
from .clock import DatabaseClock
from .kinds import KINDS, JobKind, _cancel
from .limits import POLL_SECONDS, BudgetReached, Gate, LongWait, provider_key
from .models import (
    ACTIVE_STATUSES,
    GenerationAttempt,
    Job,
    ProviderSlot,
    Run,
    SpendEntry,
    later,
    run_is,
)
from .pricing import money
from .providers import account_of
from .providers.base import (
    AwaitingService,
    ProviderError,
    RateLimited,
    StillRunning,
    Transient,
    Unsendable,
)
from .providers.http import requests_sent
from .retry import Interrupted, RetryPolicy, is_retryable
from .runs import halt_account, halt_message, halt_model, halt_run, resume_account, settle_run

logger = logging.getLogger(__name__)

Status = Job.Status
Outcome = GenerationAttempt.Outcome


class OutOfPatience(ProviderError):
    """The service kept answering "rate limited" for longer than STUDIO_RATE_LIMIT_PATIENCE."""

    outcome = "rate_limited"


class Deferred(Exception):
    """A longer wait than a worker should sleep (a Retry-After, a cool-down, a rate limit, a
    picture still being made): the job goes back to the queue with the time of its next try
    and what it waits for, holding no worker, and is handed out again when it is due."""

    def __init__(self, seconds: float, message: str = "", *, waiting_for: str = ""):
        super().__init__(message)
        self.seconds = seconds
        self.waiting_for = waiting_for


class AwaitWebhook(Exception):
    """The service makes the picture and calls a webhook when it ends: the job waits
    (awaiting, holding no worker) until then, or for `seconds`, after which the sweep
    polls it."""

    def __init__(self, seconds: float, message: str = ""):
        super().__init__(message)
        self.seconds = seconds
        self.message = message


# The longest a job waits for its webhook between two polls of the sweep.
WEBHOOK_OVERDUE_MAX = 3600.0

# How soon a job whose picture the service is still making polls it again (holding no
# worker meanwhile).
POLL_AGAIN_SECONDS = 15.0

# How long a task keeps trying to claim while every due job it aims at is taken first.
CLAIM_PATIENCE = 60.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def run_next_job(
    run_id: int,
    kind: str = "illustration",
    *,
    sleep: Callable[[float], None] | None = None,
    clock=None,
) -> int | None:
    """Claim the queued job of a kind whose turn it is (the run's own, or another running
    run's: generation.fairness) and work it to an end. Return its id, or None when no
    running run had a due job of the kind."""
    worker = JobWorker(KINDS[kind], sleep=sleep, clock=clock)
    job = worker.claim_next(run_id)
    if job is not None:
        worker.work(job)
    for run in {run_id, job.run_id} if job is not None else {run_id}:
        # While jobs of this kind are still active the run cannot be over: skip the full
        # check.
        if not worker.model.objects.filter(run_id=run, status__in=ACTIVE_STATUSES).exists():
            settle_run(run)
    return job.pk if job is not None else None


def service_job_origin(kind: JobKind, job: Job) -> GenerationAttempt | None:
    """Return the journal row of the call that created the job's service job (a Replicate
    prediction, a fal request), if it has one: whoever polls that job later enters its
    charge under this row, so the service's one charge is entered once."""
    if not job.provider_job_id:
        return None
    return (
        GenerationAttempt.objects.filter(
            **{kind.attempt_field: job}, provider_job_id=job.provider_job_id
        )
        .order_by("number")
        .first()
    )


def finish_from_journal(kind: JobKind, job: Job, *, lost_by=None) -> bool:
    """Complete a lost worker's job from its journal, if its last call's picture reached
    storage (the worker was killed after storing it): the sweep acts as that worker, whose
    claim the job still names, only while its lease has still run out (by `lost_by`, the
    sweep's clock: a compare-and-set, so a worker heard again keeps its job). Return
    whether it completed; a stopped run keeps it too."""
    worker = JobWorker(kind)
    worker.id, worker.job = job.claimed_by, job
    worker.unheld = job.status == Job.Status.QUEUED
    worker.lost = not worker.unheld
    worker.lost_by = lost_by
    try:
        worker.provider = kind.provider(job)
    except LookupError:
        return False
    return worker._recover()


@functools.cache
def claimed_rows(kind: JobKind):
    """Return a kind's jobs with what working one needs (its run, page and project, its
    last attempt's number, the kind's annotations): built once, since building it took
    longer than running it (querysets are immutable; each claim filters its own)."""
    attempts = GenerationAttempt.objects.filter(**{kind.attempt_field: OuterRef("pk")}).order_by(
        "-number"
    )
    return kind.model.objects.select_related("run", *kind.select_related).annotate(
        last_attempt=Subquery(attempts.values("number")[:1]), **kind.claim_annotations()
    )


def _save_attempt(*, pk: int, **fields) -> int:
    return GenerationAttempt.objects.filter(pk=pk).update(**fields)


class Heartbeat(liveness.Beating):
    """Renews a job's lease, and the slot its call holds, while the call is in flight.

    A call may take longer than anyone planned (a slow answer, a clip being made); the
    claim must hold meanwhile, or the sweep would hand the job to another worker and the
    picture would be paid for twice.
    """

    name = "lease-heartbeat"

    def __init__(self, worker: "JobWorker", slot: ProviderSlot | None):
        self.worker = worker
        self.slot_id = getattr(slot, "pk", None)

    def __str__(self) -> str:
        return f"Lease heartbeat of {self.worker.id}"

    def beat(self) -> None:
        self.worker.renew()
        if self.slot_id is not None:
            ProviderSlot.objects.filter(pk=self.slot_id).update(expires_at=later(self.worker.lease))


class JobWorker:
    """One claim on one job: every attempt at it, and how it ends."""

    def __init__(self, kind: JobKind, *, sleep: Callable[[float], None] | None = None, clock=None):
        self.kind = kind
        self.clock = clock or DatabaseClock()
        self.gate: Gate | None = None
        self.model = kind.model
        self.id = new_worker_id()
        self.serialized = not connection.features.has_select_for_update_skip_locked
        self.policy = RetryPolicy.from_settings()
        self.lease = float(settings.STUDIO_LEASE_SECONDS)
        self.sleep = sleep or self.wait_unless_interrupted
        self.provider = None
        self.job: Job | None = None
        self.recorded: dict = {}
        self.attempt_number = 0
        # The key of a call the service may have charged without a whole answer: the
        # next attempt sends it again, so a service that deduplicates never bills twice.
        self.repeat_key = ""
        self.failures_before = 0  # the account's outage count when this call was admitted
        self.rate_limited = False  # this worker saw a rate limit for the job
        self.waiting_shown: str | None = None  # the limit the job's row says it waits for
        self.shown_until = 0.0
        self.attempt: GenerationAttempt | None = None  # the journal row of the call
        self.storage_error: Exception | None = None  # a paid result that could not be stored
        self.stored_name = ""  # where the call's file is
        # Completing a queued job nobody holds, with a paid picture already in storage.
        self.unheld = False
        # Acting for a worker whose lease ran out (by lost_by; None: the database's now):
        # its job completes only while the lease is still out (finish_from_journal).
        self.lost = False
        self.lost_by = None

    # --- claiming -------------------------------------------------------------------

    def claim_next(self, run_id: int | None = None) -> Job | None:
        """Claim the due queued job whose turn it is (generation.fairness), in whichever
        running run it is; run_id, the run whose task this is, is kept for the caller.

        Each try is one conditional UPDATE aimed at the first due job of one run; on
        PostgreSQL its candidate is read `FOR UPDATE SKIP LOCKED` in the same statement,
        so workers claiming at once take different jobs instead of racing for one. A
        lost race tries the next run, then looks again: a task ends without a job only
        when no running run has due work of its kind."""
        conflicts = 0
        deadline = time.monotonic() + CLAIM_PATIENCE
        pause = 0.0
        # Where writes are serialized anyway (SQLite), choosing, claiming and stamping the
        # turn are one transaction, so the next worker sees this turn taken: exact round
        # robin. On PostgreSQL a worker first takes the turn with a compare-and-set on the
        # run's turn number (workers that chose the same run at the same moment choose
        # again, and see it served), then claims in a short transaction of its own: a
        # run's row is never locked while a job's row is.
        one_turn = transaction.atomic if self.serialized else nullcontext
        while True:
            won = False
            with one_turn():
                turns = fairness.order(fairness.candidates(self.kind))
                for turn in turns:
                    if len(turns) > 1 and not self.serialized and not fairness.take(turn):
                        break  # another worker took this turn first: choose again
                    if self._claim_in(turn.run_id, project_id=turn.project_id):
                        fairness.served(turn.run_id, conflicts=conflicts)
                        won = True
                        break
                    conflicts += 1  # another worker emptied that run first, or it stopped
                else:
                    if not turns:
                        return None
                    pause = min(0.25, pause + 0.01)  # every run looked at was emptied
            if won:
                # Read once the turn is committed: on SQLite every other worker waits for
                # the write lock while this transaction lasts.
                try:
                    return self._claimed()
                except self.model.DoesNotExist:  # its page was deleted in that moment
                    return None
            if time.monotonic() > deadline:
                # Something keeps every due job out of reach (rows locked for long): the
                # sweep hands this work to the broker again.
                logger.warning("Gave up claiming after %s lost races", conflicts)
                return None
            if pause:
                time.sleep(pause)

    def _claim_in(self, run_id: int, *, project_id: int | None = None) -> bool:
        """Claim the run's most urgent due job with one statement; return whether it won
        (project_id, the run's project, if the caller knows it: changes.of_project)."""
        # Where writes are serialized, claim_next's transaction holds this one already: no
        # savepoint (two statements) around a single UPDATE.
        with nullcontext() if self.serialized else transaction.atomic():
            if not self.serialized:
                # The project's row first, the lock order of every writer that moves its
                # change counter (a stop locks the project, then cancels its queued jobs):
                # locking the candidate first, then the project to move its counter,
                # deadlocks against such a writer.
                list(
                    Project.objects.select_for_update(of=("self",))
                    .filter(runs=run_id)
                    .values_list("pk", flat=True)
                )
            return bool(
                prepared.write(
                    f"{self.kind.name}.claim",
                    self._claim_action,
                    table=self.model._meta.db_table,
                    run_id=run_id,
                    project_id=project_id,
                    worker_id=self.id,
                    lease=self.lease,
                    serialized=self.serialized,
                )
            )

    def _claim_action(self, *, run_id, project_id, worker_id, lease, serialized) -> int:
        """The claim's one UPDATE, aimed at the run's most urgent due job (made once per
        shape: generation.prepared)."""
        candidate = (
            self.model.objects.filter(fairness.due(), run_id=run_id)
            .order_by(*self.kind.claim_order)
            .values("pk")[:1]
        )
        if not serialized:
            candidate = candidate.select_for_update(skip_locked=True, of=("self",))
        rows = self.model.objects.filter(pk=Subquery(candidate))
        if project_id is not None:
            rows = rows.of_project(project_id)
        return rows.claim(worker_id=worker_id, lease=lease)

    def _claimed(self) -> Job:
        """Return the job this worker just claimed, with what working it needs."""
        # Compiled once (generation.prepared): building this query with its joins and
        # annotations cost a worker more than twice what running it does.
        return prepared.get(
            f"{self.kind.name}.claimed",
            self._claimed_rows,
            worker_id=self.id,
            status=Status.GENERATING,
        )

    def _claimed_rows(self, *, worker_id: str, status: str):
        return claimed_rows(self.kind).filter(claimed_by=worker_id, status=status)

    def mine(self):
        """Return the job's row, only while this worker holds it."""
        return self.model.objects.filter(pk=self.job.pk).held_by(self.id)

    def move_mine(self, transition: str, **fields) -> int:
        """Make one of the job queryset's transitions (start_attempt, complete) on the
        job's row, named as its project's (changes.of_project: the writes every call makes
        move the project's counter by its id), from statements made once
        (generation.prepared). Return rows moved."""
        project = self.gate.project if self.gate is not None else self.kind.project(self.job)
        model = self.model

        def action(*, pk, project_id, **fields):
            return getattr(model.objects.filter(pk=pk).of_project(project_id), transition)(**fields)

        return prepared.write(
            f"{self.kind.name}.{transition}",
            action,
            table=model._meta.db_table,
            pk=self.job.pk,
            project_id=project.pk,
            **fields,
        )

    def renew(self) -> bool:
        """Extend the lease while the job is ours (a call in flight is kept whatever
        happens to the run meanwhile)."""
        return bool(
            self.model.objects.filter(pk=self.job.pk).renew(worker_id=self.id, lease=self.lease)
        )

    # --- working --------------------------------------------------------------------

    def work(self, job: Job) -> None:
        """Call the service until the job completes, fails, or is interrupted."""
        self.job = job
        try:
            self.provider = self.kind.provider(job)
        except LookupError as error:  # no provider configured for this kind
            self._fail(ProviderError(str(error)))
            return
        self.attempt_number = job.last_attempt or 0
        if self.attempt_number and self._recover():
            return
        if self._refuse_retired_model():
            return
        try:
            with Heartbeat(self, None):  # reading reference pictures may take a while
                prompt, self.recorded = self.kind.prepare(job, self.provider)
        except Exception as error:  # the page's own input: nothing was sent
            logger.exception("Could not prepare the call for job %s", job.pk)
            self._fail(Unsendable(f"The studio could not prepare this page's request: {error}"))
            return
        self.gate = Gate(
            provider=provider_key(self.provider.name, getattr(self.provider, "model", "")),
            project=self.kind.project(job),
            price=self.kind.price(self.provider),
            lease=self.lease,
            clock=self.clock,
        )
        self.account = account_of(self.provider)
        if self.kind.records_account and job.run is not None and job.run.account != self.account:
            # The run names the account its calls use, as this worker's environment has it.
            Run.objects.filter(pk=job.run_id).update(account=self.account)
        retrying = Retrying(
            # Only counted attempts end the tries: a rate limit waits, it does not fail.
            stop=lambda state: self.job.attempts_made >= self.policy.max_attempts,
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
            self._defer(deferred.seconds, deferred.waiting_for)
            return
        except AwaitWebhook as waiting:
            self._await_webhook(waiting.seconds)
            return
        except ProviderError as error:
            self._fail(error)
            return
        if self.storage_error is not None:
            self._halt_for_storage(self.storage_error)
            return
        self._keep(result)

    def _refuse_retired_model(self) -> bool:
        """The lifecycle guard: a model its service has shut down is never called. The run
        halts with reason config (the project's model, not the account: other projects on
        the same key go on), saying when it was shut down and what replaces it; the job
        waits for Resume. Return whether it refused."""
        model = getattr(self.provider, "model", "")
        if catalogue.model(self.provider.name, model).shutdown is None:
            return False  # no end announced: no need to read the clock
        message = catalogue.refusal(self.provider.name, model, self.clock.now().date())
        if not message:
            return False
        logger.warning("Refused job %s: %s", self.job.pk, message)
        if self.job.run_id is None:
            self._fail(Unsendable(message))
            return True
        halt_run(self.job.run_id, reason=Run.HaltReason.CONFIG, message=message)
        self._release()
        return True

    # --- the call journal -------------------------------------------------------------

    def _recover(self) -> bool:
        """Read the job's last journal row before calling again. A picture that was paid
        for and stored, whose job never completed (its worker was killed, the database
        failed, its lease was lost), completes the job now without a call: return True.
        Otherwise a call the service may have charged (paid but not kept, or no whole
        answer) is repeated with the same idempotency key."""
        # The latest call the service may have charged: it answered with a picture, its
        # worker was lost, or its answer never came whole. Calls after it that settled
        # nothing (a 402, a 500) do not end its unknown outcome.
        answered = (Outcome.SUCCESS, Outcome.IN_FLIGHT, Outcome.LOST)
        maybe_paid = Q(charge_unconfirmed=True) | Q(outcome__in=answered)
        last = (
            GenerationAttempt.objects.filter(maybe_paid, **{self.kind.attempt_field: self.job})
            .order_by("-number")
            .first()
        )
        if last is None:
            return False
        result = None
        if last.storage_name and last.outcome in answered:
            result = self.kind.stored_result(self.job, last.storage_name)
        if result is None:
            self.repeat_key = last.idempotency_key
            return False
        self.stored_name = last.storage_name
        self._confirm_stored(last)
        logger.info("Job %s completes from its stored picture (attempt %s)", self.job.pk, last.pk)
        return self._keep(result)

    def _confirm_stored(self, attempt: GenerationAttempt) -> None:
        """The journal row's picture is in storage: the call succeeded and was paid. Close
        the row (if its worker was lost before it could), and make sure its charge is in
        the ledger, once: confirmed in place if the sweep entered it as likely, entered if
        its worker was killed between closing the row and entering it."""
        if attempt.outcome == Outcome.SUCCESS:
            price = attempt.cost or attempt.expected_price
        else:
            price = attempt.expected_price
            if price is None:
                price = self.kind.likely_price(self.job)
            self._save(
                attempt,
                outcome=Outcome.SUCCESS,
                finished_at=Now(),
                charge_unconfirmed=False,
                cost=price or 0,
                message="Completed from the picture stored before its worker was lost.",
            )
        self._enter(attempt, price, SpendEntry.Basis.PRICE, confirmed=True, model=self.job.model)

    def _keep(self, result) -> bool:
        """Complete the job with its stored result (one transition; the file is in storage
        already). A database that fails here loses nothing: the journal names the picture,
        and whoever works the job next completes it from there."""
        try:
            if self.kind.complete(self, result):
                return True
            # The claim was lost while the call ran (the sweep took the job back): if
            # nobody holds the job now, the paid picture in storage completes it; if a
            # second worker does, the journal names the picture for whoever comes next.
            self.unheld = bool(self.stored_name)
            return self.unheld and self.kind.complete(self, result)
        except DatabaseError:
            logger.exception("Could not complete job %s; its picture is kept", self.job.pk)
            try:
                self._release()
            except DatabaseError:  # the lease runs out and the sweep takes it back
                pass
            return False

    def _halt_for_storage(self, error: Exception) -> None:
        """The picture was paid for but could not be stored (a full disk, a storage service
        down): halt instead of paying for more pictures that cannot be kept."""
        halt_run(
            self.job.run_id,
            reason=Run.HaltReason.STORAGE,
            message=(
                f"The studio could not save a picture it had received and paid for "
                f"({type(error).__name__}: {error}). Free disk space or fix the storage "
                f"settings, then press Resume."
            )[:2000],
        )
        self._release()

    def _attempt(self, prompt: str):
        """Make one call to the service, journalled as one GenerationAttempt row written
        before the request goes out; store what it returns before anything else."""
        self.prompt = prompt  # logged only with STUDIO_LOG_PROMPTS
        started = self.move_mine(
            "start_attempt",
            # What is sent is recorded with the first renewal, saving a query.
            worker_id=self.id,
            lease=self.lease,
            **self.recorded,
        )
        self.recorded = {}
        if not started:
            raise Interrupted()
        probing = self._admit()
        slot = self._take_slot()
        try:
            self.attempt_number += 1
            number = self.attempt_number
            # A call whose outcome is unknown is sent again with its key until a call
            # with that key is answered with a picture.
            key = self.repeat_key or f"studio-{self.kind.name}-{self.job.pk}-{number}"
            try:
                attempt = GenerationAttempt.objects.create(
                    **{self.kind.attempt_field: self.job},
                    number=number,
                    started_at=Now(),
                    idempotency_key=key,
                    account=getattr(self.provider, "account", self.provider.name),
                    storage_name=self.kind.storage_name(self.job),
                    expected_price=self.gate.price,
                )
            except IntegrityError:  # the page (or project) was deleted meanwhile
                raise Interrupted() from None
            self.attempt = attempt
            started = time.monotonic()
            sent_before = requests_sent()
            try:
                with Heartbeat(self, slot):
                    result = self.kind.call(self, prompt, key)
                    stored = self._store(result, attempt)
            except Interrupted:
                # Stopped while waiting on the service (a clip being made): the service's
                # job id is kept, so whoever resumes this job polls the same one.
                self._save(
                    attempt,
                    finished_at=Now(),
                    outcome=Outcome.INTERRUPTED,
                    message=getattr(self, "interrupt_note", "")
                    or "Stopped while waiting for the service; resuming polls it again.",
                )
                raise
            except AwaitingService as waiting:
                self._awaiting(attempt, started, waiting)
            except StillRunning as error:
                self._still_running(attempt, started, error)
            except ProviderError as error:
                if requests_sent() == sent_before:
                    error.sent = False  # the page's own: never the account's breaker
                self._record(attempt, started, error=error)
                if error.maybe_paid:
                    self.repeat_key = key
                self._after_failure(error, attempt=attempt, probing=probing)
                raise
            except Exception as error:  # a bug or an unexpected library error: still one row
                if requests_sent() == sent_before:
                    # Nothing went out: the page's own input (a picture that cannot be
                    # read); it fails this page alone and never counts against the account.
                    wrapped = Unsendable(
                        f"The studio could not prepare this page's request: {error}"
                    )
                else:
                    wrapped = Transient(f"unexpected error: {error!r}")
                self._record(attempt, started, error=wrapped)
                self._after_failure(wrapped, attempt=attempt, probing=probing)
                raise wrapped from error
            self._record(attempt, started, result=result, stored=stored)
            self.repeat_key = ""
            self._after_success(probing=probing)
            return result
        finally:
            Gate.release(slot)

    def _store(self, result, attempt: GenerationAttempt) -> str:
        """Write the received file under the journal's name before any transition; return
        the name. A storage that fails is remembered (the call is still recorded as paid),
        and the job halts for it afterwards."""
        try:
            self.stored_name = self.kind.store(self, result, attempt.storage_name)
            return self.stored_name
        except Exception as error:  # any storage backend's failure; a paid call is at stake
            logger.exception("Could not store the result of job %s", self.job.pk)
            self.storage_error = error
            return ""

    def _still_running(self, attempt, started, error: StillRunning):
        """The service is still making it at the deadline: no failure. Its charge is
        entered as likely (once: under the call that created the service's job), and the
        job waits in the queue, holding no worker, to poll the same job again."""
        self._made_at_the_service(attempt, started, error.message)
        raise Deferred(POLL_AGAIN_SECONDS, error.message) from error

    def _made_at_the_service(self, attempt, started, message: str):
        """The call ends with the service's job still being made: the attempt ends
        interrupted, and the job's charge is entered as likely, once, under the call that
        created it. Return that call's attempt."""
        origin = self._origin_of_service_job() or attempt
        self._save(
            attempt,
            finished_at=Now(),
            duration_ms=int((time.monotonic() - started) * 1000),
            outcome=Outcome.INTERRUPTED,
            message=message[:2000],
        )
        price = origin.expected_price if origin.expected_price is not None else self.gate.price
        self._enter(origin, price, SpendEntry.Basis.LIKELY, confirmed=False)
        return origin

    def _await_webhook(self, seconds: float) -> None:
        """Let the job wait for its webhook, holding no worker (the sweep polls it after
        `seconds`). A run stopped while the create was out cancels the service's job
        instead, as Stop does to the jobs already waiting."""
        from . import webhooks

        rows = self.model.objects.filter(pk=self.job.pk)
        if rows.await_service(worker_id=self.id, overdue=seconds, note="At the service"):
            # Its webhook may have come before the job was awaiting (a fast service): the
            # delivery is recorded, and the job is woken here instead.
            webhooks.wake_if_delivered(self.kind, self.job)
            return
        if self.run_stopping():
            _cancel(self.provider, self.job.provider_job_id)
        self._release()  # stopped: canceled; or no longer ours: whoever has it goes on

    def _awaiting(self, attempt, started, waiting: AwaitingService):
        """The service's job was created with a webhook and is still being made: the call
        ends here, no failure. Its charge is entered as likely (once: under the call that
        created it), and the job waits for its webhook holding no worker; if none comes,
        the sweep polls it after STUDIO_WEBHOOK_OVERDUE, then after as long again as it
        has waited (backoff, at most an hour)."""
        origin = self._made_at_the_service(attempt, started, waiting.message)
        overdue = float(settings.STUDIO_WEBHOOK_OVERDUE)
        created = origin.started_at
        waited = (self.clock.now() - created).total_seconds() if hasattr(created, "tzinfo") else 0
        raise AwaitWebhook(min(WEBHOOK_OVERDUE_MAX, max(overdue, waited)), waiting.message)

    def _origin_of_service_job(self) -> GenerationAttempt | None:
        return service_job_origin(self.kind, self.job)

    def _admit(self) -> bool:
        """Wait for the account to allow a call: a short cool-down is waited out here, a
        long one gives the job back with its next-try time; a halted account halts this run
        too. Return whether this call is the probe of a downed account."""
        while True:
            admission = accounts.admit(self.account, worker_id=self.id)
            self.failures_before = admission.failures_in_row
            if admission.verdict == "go":
                self._clear_waiting()
                return False
            if admission.verdict == "probe":
                self._clear_waiting()
                return True
            if admission.verdict == "halted":
                halt_run(
                    self.job.run_id,
                    reason=admission.reason,
                    message=admission.message,
                    account=self.account,
                )
                raise Interrupted()
            if admission.wait > accounts.WAIT_IN_WORKER:
                self._clear_waiting()
                raise Deferred(admission.wait, "The service asked every worker to wait.")
            self.clock.sleep(min(admission.wait, 1.0))
            if not self._still_waiting("asked to slow down", admission.wait):
                self._clear_waiting()
                raise Interrupted()
            # Still cooling or now admitted: whatever follows shows its own state.

    def _after_success(self, *, probing: bool) -> None:
        # Any success resets the outage count, whatever it was when this call went out.
        accounts.succeeded(self.account, counted=self.failures_before)
        if self.job.rate_limited_since is not None or self.rate_limited:
            self.model.objects.filter(pk=self.job.pk).update(rate_limited_since=None)
        if probing:
            self._probe_answered()

    def _probe_answered(self) -> None:
        """The service answered the probe (a picture, or a refusal of its page): it is
        back, and every run the outage halted continues by itself. The answer is kept
        whatever happens here: a probe that cannot report is lost, and probed again."""
        try:
            resume_account(self.account, probe_of=self.id)
        except DatabaseError:
            logger.exception("Could not resume %s after its probe got through", self.account)

    def _take_slot(self):
        """Wait until the shared limits allow a call; halt the run if the budget would be
        passed; give up (Interrupted) when the run stops, pauses or halts meanwhile."""
        try:
            slot = self.gate.acquire(
                still_wanted=self._still_waiting_for_slot, patience=accounts.WAIT_IN_WORKER
            )
        except LongWait as wait:
            # A rate limit's next token is far off: the job waits in the queue, and this
            # worker takes other editors' pages meanwhile (the account's cool-down does the
            # same in _admit).
            raise Deferred(wait.seconds, wait.why, waiting_for=wait.why) from None
        except BudgetReached as reached:
            if reached.price is None:
                message = (
                    f"This project has a budget of {money(reached.budget)}, but the studio "
                    f"knows no price for {self.gate.provider} images, so it cannot keep to "
                    f"it. Set the price in STUDIO_PRICES (or remove the budget in "
                    f"Settings), then press Resume."
                )
            else:
                message = (
                    f"The next illustration would take this project past its budget of "
                    f"{money(reached.budget)} ({money(reached.spent)} spent, "
                    f"{money(reached.price)} each). Raise the budget in Settings, then "
                    f"press Resume."
                )
            halt_run(self.job.run_id, reason=Run.HaltReason.BUDGET, message=message)
            raise Interrupted() from None
        finally:
            self._clear_waiting()
        if slot is None:
            raise Interrupted()
        return slot

    def _still_waiting_for_slot(self) -> bool:
        """still_wanted() while the shared limits hold the call back."""
        seconds, why = self.gate.waiting or (0.0, "")
        return self._still_waiting(why, seconds)

    def _clear_waiting(self) -> None:
        """The card said "Waiting for the service": no longer."""
        if self.waiting_shown:
            self.model.objects.filter(pk=self.job.pk).held_by(self.id).update(
                waiting_for="", next_attempt_at=None, updated_at=Now()
            )
            self.waiting_shown = None

    def _still_waiting(self, why: str, seconds: float) -> bool:
        """still_wanted() while something holds the call back, which also shows on the job
        what it waits for and when it may go (written when that changes, not on every
        look)."""
        if not why or (why == self.waiting_shown and time.monotonic() < self.shown_until):
            return self.still_wanted()
        self.waiting_shown = why
        self.shown_until = time.monotonic() + seconds  # then the time shown has passed
        # A concurrency slot has no known time; a rate's next token has.
        next_at = later(seconds) if seconds > POLL_SECONDS else None
        return bool(
            self.model.objects.filter(pk=self.job.pk).renew(
                worker_id=self.id,
                lease=self.lease,
                running=True,
                waiting_for=why[:120],
                next_attempt_at=next_at,
            )
        )

    def run_stopping(self) -> bool:
        return Run.objects.filter(
            pk=self.job.run_id, state__in=(Run.State.STOPPING, Run.State.STOPPED)
        ).exists()

    def still_wanted(self) -> bool:
        """Renew the lease while waiting (for a slot, or on a long job at the service);
        False once the job is not ours or its run is no longer running."""
        return bool(
            self.model.objects.filter(pk=self.job.pk).renew(
                worker_id=self.id, lease=self.lease, running=True
            )
        )

    @staticmethod
    def _save(attempt, **fields) -> None:
        """Update the attempt row; it may be gone with its page (deleted mid-call)."""
        prepared.write(
            "attempt.save",
            _save_attempt,
            table=GenerationAttempt._meta.db_table,
            pk=attempt.pk,
            **fields,
        )

    def _enter(self, attempt, amount, basis: str, *, confirmed: bool, model=None) -> None:
        """Enter a call's charge in the ledger under its journal row (once: ledger.enter)."""
        ledger.enter(
            attempt_id=attempt.pk,
            amount=amount,
            basis=basis,
            confirmed=confirmed,
            project_id=self.kind.project(self.job).pk,
            run_id=self.job.run_id,
            kind=self.kind.name,
            account=attempt.account,
            provider=self.provider.name,
            model=getattr(self.provider, "model", "") if model is None else model,
        )

    def _record(self, attempt, started, *, result=None, error=None, stored: str = "") -> None:
        """Close the attempt's journal row and enter what the call cost in the ledger: a
        picture that came from a service job an earlier call created is entered under
        that call's row (confirming its likely charge in place), never a second time."""
        fields = {
            "finished_at": Now(),
            "duration_ms": int((time.monotonic() - started) * 1000),
        }
        cost, basis, confirmed = None, SpendEntry.Basis.PRICE, True
        entered = attempt
        if error is None:
            cost, basis = self.kind.charged(self.provider, result)
            fields.update(
                outcome=Outcome.SUCCESS,
                http_status=result.http_status,
                provider_request_id=result.request_id[:120],
            )
            if stored != attempt.storage_name:
                fields["storage_name"] = stored
            entered = self._origin_of_service_job() or attempt
        else:
            if error.maybe_paid:
                cost, basis, confirmed = self.gate.price, SpendEntry.Basis.LIKELY, False
            fields.update(
                outcome=error.outcome,
                http_status=error.http_status,
                error_code=(error.code or "")[:80],
                message=error.message[:2000],
                retry_after=error.retry_after,
                provider_request_id=(error.request_id or "")[:120],
                charge_unconfirmed=error.maybe_paid,
            )
        fields["cost"] = cost or 0
        with transaction.atomic():  # one write transaction, not two: SQLite has one writer
            self._save(attempt, **fields)
            self._enter(entered, cost, basis, confirmed=confirmed)
        logs.attempt(
            run_id=self.job.run_id,
            project_id=self.gate.project.pk,
            page_id=getattr(self.job, "page_id", None),
            kind=self.kind.name,
            service=self.provider.name,
            model=getattr(self.provider, "model", ""),
            number=attempt.number,
            outcome=fields["outcome"],
            http_status=fields["http_status"],
            duration_ms=fields["duration_ms"],
            cost=fields["cost"],
            request_id=fields["provider_request_id"],
            prompt=self.prompt,
        )

    def _after_failure(
        self, error: ProviderError, *, attempt: GenerationAttempt, probing: bool = False
    ) -> None:
        """Decide what the failure means beyond this attempt: halt the account, count the
        outage breaker, wait out a rate limit, or count the attempt against the job."""
        service = self.kind.service
        # A halt answers only calls that started after the account was last set going:
        # this attempt's start, by the database's clock.
        call_started = Subquery(
            GenerationAttempt.objects.filter(pk=attempt.pk).values("started_at")[:1]
        )
        if error.halts_run:
            message = halt_message(error.outcome, error, provider=self.provider, service=service)
            if error.outcome == Outcome.CONFIG:
                model = getattr(self.provider, "model", "")
                about_model = error.setting == getattr(self.provider, "model_setting", None)
                if about_model and model:
                    # The model no longer exists (or never did): say what replaces it.
                    message += catalogue.offer_sentence(
                        self.provider.name, model, self.clock.now().date()
                    )
                if about_model and getattr(self.provider, "project_model", False):
                    # The project's own choice of model: its run halts, not the account's
                    # other projects (one editor's input never counts against the shared).
                    message = error.message + catalogue.offer_sentence(
                        self.provider.name, model, self.clock.now().date()
                    )
                    halt_run(self.job.run_id, reason=error.outcome, message=message[:2000])
                else:
                    halt_model(self.kind, self.account, reason=error.outcome, message=message)
                return  # a halting attempt never counts against the job
            halt_account(
                self.account,
                reason=error.outcome,
                message=message,
                provider=self.provider,
                call_started=call_started,
                run_id=self.job.run_id,
            )
            return  # a halting attempt never counts against the job
        if isinstance(error, RateLimited):
            self._wait_for_rate_limit(error)
            return
        # Only a call that went out tells anything of the service: an error in making the
        # request (a reference picture that cannot be decoded) is this page's alone.
        sent = getattr(error, "sent", True)
        if probing and not sent:
            accounts.probe_given_back(self.account, worker_id=self.id)
        elif probing and error.outcome == Outcome.REJECTED:
            self._probe_answered()  # a refusal proves the service is up; the page fails
        elif probing:
            message = self._probe_message(error)
            if accounts.probe_failed(self.account, message, worker_id=self.id):
                halt_run(
                    self.job.run_id,
                    reason=Run.HaltReason.OUTAGE,
                    message=message,
                    account=self.account,
                )
                raise Interrupted()
            # Resumed meanwhile (or halted for something else): an ordinary failure.
        if error.retryable and sent:
            count = accounts.count_failure(
                self.account,
                provider=self.provider.name,
                endpoint=getattr(self.provider, "base_url", ""),
            )
            if count >= settings.STUDIO_OUTAGE_THRESHOLD:
                message = halt_message(
                    Run.HaltReason.OUTAGE,
                    error,
                    provider=self.provider,
                    service=service,
                    count=count,
                )
                halt_account(
                    self.account,
                    reason=Run.HaltReason.OUTAGE,
                    message=message,
                    provider=self.provider,
                    call_started=call_started,
                    run_id=self.job.run_id,
                )
                raise Interrupted()
        self.model.objects.filter(pk=self.job.pk).count_attempt()
        self.job.attempts_made += 1
        if error.retryable and (error.retry_after or 0) > accounts.WAIT_IN_WORKER:
            if self.job.attempts_made < self.policy.max_attempts:
                raise Deferred(error.retry_after, error.message) from error

    def _probe_message(self, error: ProviderError) -> str:
        return (
            f"The {self.kind.service} ({self.provider.name}) is still failing "
            f"({error.message[:300]}); the studio tries again later by itself, or press "
            f"Resume when it is back."
        )

    def _wait_for_rate_limit(self, error: RateLimited) -> None:
        """A rate limit is waiting, not failing: every worker on the account waits its
        Retry-After; the page waits at most STUDIO_RATE_LIMIT_PATIENCE in all."""
        patience = float(settings.STUDIO_RATE_LIMIT_PATIENCE)
        wait = min(error.retry_after or self.policy.backoff_base or 1.0, patience)
        accounts.cool_down(
            self.account,
            wait,
            error.message,
            provider=self.provider.name,
            endpoint=getattr(self.provider, "base_url", ""),
        )
        self.rate_limited = True
        rows = self.model.objects.filter(pk=self.job.pk)
        rows.filter(rate_limited_since__isnull=True).update(rate_limited_since=Now())
        if rows.filter(rate_limited_since__lt=later(-patience)).exists():
            raise OutOfPatience(
                f"Rate limited for {round(patience / 60)} minutes: the {self.kind.service} kept "
                f"answering that too many requests were made. Its last answer: {error.message}",
                http_status=error.http_status,
            )
        if wait > accounts.WAIT_IN_WORKER:
            raise Deferred(wait, error.message) from error

    def _mark_retrying(self, retry_state) -> None:
        self.model.objects.filter(pk=self.job.pk).wait_to_retry(
            worker_id=self.id, wait=retry_state.upcoming_sleep, lease=self.lease
        )

    def wait_unless_interrupted(self, seconds: float) -> None:
        """Sleep between attempts, beating, waking early when the run stops, pauses or
        halts."""
        deadline = time.monotonic() + seconds
        beat = liveness.beat_seconds()
        next_beat = time.monotonic() + beat
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(1.0, left, beat))
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + beat
                if not self.still_wanted():  # renews the lease while the run runs
                    return
            elif not self.mine().filter(run_is(Run.State.RUNNING)).exists():
                return

    # --- endings --------------------------------------------------------------------

    def mark_complete(self, **fields) -> int:
        """Mark the job complete if this worker still holds it (or, keeping a stored paid
        picture, if nobody does; or, for a lost worker, while its lease is still out);
        return rows updated."""
        if self.lost:
            project = self.gate.project if self.gate is not None else self.kind.project(self.job)
            rows = self.model.objects.filter(pk=self.job.pk).of_project(project.pk)
            return rows.expired(now=self.lost_by).complete(
                worker_id=self.id, unheld=self.unheld, **fields
            )
        return self.move_mine("complete", worker_id=self.id, unheld=self.unheld, **fields)

    def _fail(self, error: ProviderError) -> None:
        if error.halts_run:
            self._release()
            return
        reason = "rejected" if error.outcome == Outcome.REJECTED else "exhausted"
        self.model.objects.filter(pk=self.job.pk).fail(
            worker_id=self.id, reason=reason, message=error.message
        )

    def _defer(self, seconds: float, waiting_for: str = "") -> None:
        self.model.objects.filter(pk=self.job.pk).defer(
            worker_id=self.id, wait=seconds, waiting_for=waiting_for[:120]
        )

    def _release(self) -> None:
        """Give the job back: queued again if its run may resume, canceled if it stopped."""
        self.model.objects.filter(pk=self.job.pk).release(worker_id=self.id)
