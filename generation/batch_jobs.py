"""Economy mode's work: a book's pages sent to the image service as one batch job, within 24 hours
at half price (OpenAI's Batch API; Gemini's batch mode where its client is there).

The batch is a durable object, worked in steps that each survive a killed worker:

1. `start` (in the editor's request, in its transaction): a Batch row and one journal row
   (GenerationAttempt, in flight, at the batch price) per page, the pages' jobs held by the
   batch (`batch:<id>`, a lease the checks renew). Nothing has been sent.
2. upload: the JSONL input file. A step cut off after the upload finds its file again by
   name before it uploads another.
3. create: the batch at the service. One cut off after creating finds the batch again by
   its metadata before it creates another: never a second batch for the same pages. The
   search pages through the service's batches back to when the Batch row was written;
   one that cannot get that far creates nothing and is tried again later.
4. check: the sweep (every few seconds, in every cluster, one at a time) looks at the
   batch when due, backing off, and once it ended maps its result lines back by custom_id:
   each journal row is closed once (a compare-and-set on "in flight"), its picture stored,
   its job completed and its charge entered in the ledger at the batch price in one
   transaction. Pages the batch never drew (expired, canceled) go back to Missing.

No worker waits on a batch. Stop asks the next check to cancel it at the service; what
the service finished by then comes back, is kept and is counted.
"""

import json
import logging
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from . import accounts, ledger, liveness
from .batches import BATCH_DISCOUNT, batch_price, client_for
from .clock import db_now
from .engine import JobWorker, claimed_rows, new_worker_id
from .kinds import KINDS
from .machines import JOB
from .models import WORKING_STATUSES, Batch, GenerationAttempt, Illustration, Run, later
from .providers import account_of
from .providers.base import ImageRequest, ProviderError, Transient
from .runs import halt_account, settle_run

logger = logging.getLogger(__name__)

Outcome = GenerationAttempt.Outcome
CENT_HUNDREDTH = Decimal("0.0001")  # the ledger's precision

# How long the pages' jobs are held between two checks: far longer than any poll interval,
# so the lease never runs out while the batch is out; every check renews it.
BATCH_LEASE = 6 * 3600.0
ENDED = ("completed", "expired", "cancelled", "failed")


class Crash(Exception):
    """Raised at a named step by tests that kill the worker there (FAULTS)."""


# Tests name steps here to be "killed" at them: before_upload, after_upload, before_create,
# after_create, mid_collect.
FAULTS: set[str] = set()


def _step(name: str) -> None:
    if name in FAULTS:
        raise Crash(name)


# --- 1. start ------------------------------------------------------------------------------


def start(run: Run, jobs, *, provider) -> Batch | None:
    """Hold the queued jobs for a new batch of the run and write its journal: the Batch
    row and one in-flight attempt per page, at the batch price. Call inside the
    transaction that queued them; nothing is sent here. Return the batch (None: no jobs)."""
    ids = list(jobs.filter(status=Illustration.Status.QUEUED).values_list("pk", flat=True))
    if not ids:
        return None
    model = getattr(provider, "model", "")
    batch = Batch.objects.create(
        run=run,
        project_id=run.project_id,
        provider=provider.name,
        model=model,
        account=account_of(provider),
        total=len(ids),
        next_check_at=db_now(),
    )
    rows = Illustration.objects.filter(pk__in=ids)
    rows.claim(worker_id=batch.holder, lease=BATCH_LEASE)
    rows.filter(claimed_by=batch.holder).update(
        provider=provider.name,
        model=model,
        size=settings.STUDIO_IMAGE_SIZE,
        progress_note="In a batch · waiting to be sent",
    )
    held = list(rows.filter(claimed_by=batch.holder).select_related("page__project"))
    price = batch_price(provider)
    now = db_now()
    kind = KINDS["illustration"]
    GenerationAttempt.objects.bulk_create(
        GenerationAttempt(
            illustration=job,
            number=1,
            started_at=now,
            expected_price=price,
            account=batch.account,
            provider_job_id=batch.holder,
            idempotency_key=custom_id(job),
            storage_name=kind.storage_name(job),
        )
        for job in held
    )
    Batch.objects.filter(pk=batch.pk).update(total=len(held))
    return batch


def custom_id(job) -> str:
    """The request's id in the batch: its result line names it."""
    return f"illustration-{job.pk}"


# --- the sweep's duty --------------------------------------------------------------------------


def advance_due(*, now=None) -> int:
    """Work every batch whose next step is due (the sweep, every beat). Return how many
    it worked."""
    due = Batch.objects.exclude(step=Batch.Step.COLLECTED).filter(
        Q(next_check_at__isnull=True)
        | Q(next_check_at__lte=now or Now())
        # Stop asked for a cancel: due at once, until the service says it is cancelling.
        | (Q(cancel_requested=True) & ~Q(status__in=("cancelling", *ENDED)))
    )
    worked = 0
    for batch_id in due.values_list("pk", flat=True):
        worked += advance(batch_id)
    return worked


def advance(batch_id: int) -> bool:
    """Take the batch's next step (upload, create, check, collect) if no one else is on it;
    return whether this call worked it. A failure leaves the step to the next try."""
    worker = new_worker_id()
    lease = float(settings.STUDIO_LEASE_SECONDS)
    free = Q(claimed_by="") | Q(lease_expires_at__lt=Now())
    claimed = (
        Batch.objects.filter(pk=batch_id)
        .exclude(step=Batch.Step.COLLECTED)
        .filter(free)
        .update(claimed_by=worker, lease_expires_at=later(lease))
    )
    if not claimed:
        return False
    try:
        batch = Batch.objects.get(pk=batch_id)
        with StepBeat(batch_id, worker, lease):
            try:
                _work(batch)
            except ProviderError as error:
                _after_error(batch, error)
    finally:
        Batch.objects.filter(pk=batch_id, claimed_by=worker).update(
            claimed_by="", lease_expires_at=None, updated_at=Now()
        )
    return True


class StepBeat(liveness.Beating):
    """Renews a step's claim on its batch every beat while the step runs (an upload, a
    result file's download): a sweeper killed mid-step loses its claim within a lease, and
    one that is slow never has its step taken over."""

    name = "batch-step-beat"

    def __init__(self, batch_id: int, worker: str, lease: float):
        self.batch_id, self.worker, self.lease = batch_id, worker, lease

    def __str__(self) -> str:
        return f"Batch {self.batch_id}'s step"

    def beat(self) -> None:
        Batch.objects.filter(pk=self.batch_id, claimed_by=self.worker).update(
            lease_expires_at=later(self.lease)
        )


def _work(batch: Batch) -> None:
    if batch.step == Batch.Step.NEW and batch.cancel_requested:
        # Nothing was sent: Stop hands the pages back at once, whatever the account says.
        _collect(batch, client=None, state=None, reason="Stopped before the batch was sent.")
        return
    if batch.step in (Batch.Step.NEW, Batch.Step.UPLOADED) and not batch.cancel_requested:
        if accounts.state_of(batch.account)["state"] == "halted":
            _later(batch)
            return  # Resume of the account continues it
    if batch.step == Batch.Step.NEW:
        _upload(batch)
        batch.refresh_from_db()
    if batch.step == Batch.Step.UPLOADED:
        _create(batch)
        batch.refresh_from_db()
    if batch.step == Batch.Step.SUBMITTED:
        _check(batch)


def _later(batch: Batch) -> None:
    Batch.objects.filter(pk=batch.pk).update(next_check_at=later(_poll_wait(batch.checks)))


def _poll_wait(checks: int) -> float:
    first = float(settings.STUDIO_BATCH_POLL_SECONDS)
    return min(float(settings.STUDIO_BATCH_POLL_MAX), first * 2 ** min(checks, 20))


def _held(batch: Batch):
    """The batch's pages' jobs it still holds, with what completing them needs."""
    kind = KINDS["illustration"]
    return claimed_rows(kind).filter(claimed_by=batch.holder, status__in=WORKING_STATUSES)


def _open_lines(batch: Batch):
    return GenerationAttempt.objects.filter(
        provider_job_id=batch.holder, outcome=Outcome.IN_FLIGHT
    ).select_related("illustration")


# --- 2. upload ---------------------------------------------------------------------------------


def _lines(batch: Batch, client) -> dict[str, list[bytes]]:
    """Return the request lines of the pages the batch holds, by endpoint; a page whose
    request cannot be made (its references too large for a line) fails here, alone."""
    kind = KINDS["illustration"]
    by_endpoint: dict[str, list[bytes]] = {}
    for job in _held(batch).order_by("page__number"):
        try:
            prompt, recorded = kind.prepare(job, client)
            request = ImageRequest(
                prompt=prompt,
                size=settings.STUDIO_IMAGE_SIZE,
                seed=job.pk,
                idempotency_key=custom_id(job),
                caption=kind.caption(job),
                references=tuple(reference for _, reference in job.references),
            )
            line = client.line(custom_id(job), request)
        except ProviderError as error:
            _fail_line(batch, job, error)
            continue
        except Exception as error:  # noqa: BLE001 - the page's own input: nothing was sent
            logger.exception("Could not prepare the batch line of job %s", job.pk)
            _fail_line(batch, job, Transient(f"The studio could not prepare this page: {error}"))
            continue
        Illustration.objects.filter(pk=job.pk, claimed_by=batch.holder).update(**recorded)
        by_endpoint.setdefault(client.endpoint(request), []).append(line)
    return by_endpoint


def _groups(by_endpoint: dict[str, list[bytes]], client) -> list[tuple[str, list[bytes]]]:
    """Return the lines in groups one batch can take: one endpoint each, at most the
    service's lines and bytes a batch (OpenAI: 50,000 requests and a 200 MB file; Gemini:
    20 MB inline)."""
    most_lines, most_bytes = client.max_batch_lines, client.max_batch_bytes
    groups = []
    for endpoint in sorted(by_endpoint):
        chunk, size = [], 0
        for line in by_endpoint[endpoint]:
            if chunk and (len(chunk) >= most_lines or size + len(line) + 1 > most_bytes):
                groups.append((endpoint, chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line) + 1
        groups.append((endpoint, chunk))
    return groups


def _split(batch: Batch, groups: list[tuple[str, list[bytes]]]) -> tuple[str, list[bytes]]:
    """A batch takes one group: the lines of any other go to a batch of their own (journal
    moved first, nothing sent). Return this batch's endpoint and lines."""
    for endpoint, lines in groups[1:]:
        ids = [_job_of(line) for line in lines]
        with transaction.atomic():
            other = Batch.objects.create(
                run_id=batch.run_id,
                project_id=batch.project_id,
                provider=batch.provider,
                model=batch.model,
                account=batch.account,
                endpoint=endpoint,
                total=len(ids),
                next_check_at=db_now(),
            )
            Illustration.objects.filter(pk__in=ids, claimed_by=batch.holder).update(
                claimed_by=other.holder
            )
            GenerationAttempt.objects.filter(
                illustration_id__in=ids, provider_job_id=batch.holder, outcome=Outcome.IN_FLIGHT
            ).update(provider_job_id=other.holder)
    return groups[0]


def _job_of(line: bytes) -> int:
    """Return the job id a request line names (OpenAI: custom_id; Gemini: metadata key)."""
    request = json.loads(line)
    return _job_id(request.get("custom_id") or request["metadata"]["key"])


def _job_id(cid: str) -> int:
    """Return the job id a custom id names ("illustration-42")."""
    return int(cid.rsplit("-", 1)[1])


def filename(batch: Batch) -> str:
    """The input file's name: unique to the batch, so a lost upload is found again."""
    return f"studio-batch-{batch.pk}-{batch.created_at:%Y%m%d%H%M%S}.jsonl"


def _upload(batch: Batch) -> None:
    client = client_for(batch.provider)
    by_endpoint = _lines(batch, client)
    if not by_endpoint:
        _collect(batch, client=None, state=None, reason="")
        return
    endpoint, lines = _split(batch, _groups(by_endpoint, client))
    content = b"\n".join(lines) + b"\n"
    _step("before_upload")
    name = filename(batch)
    file_id = client.find_file(name) or client.upload(name, content)
    _step("after_upload")
    Batch.objects.filter(pk=batch.pk, step=Batch.Step.NEW).update(
        step=Batch.Step.UPLOADED,
        input_file_id=file_id,
        endpoint=endpoint,
        total=len(lines),
        message="",  # why the step waited (the page shows it) is over once it is done
        updated_at=Now(),
    )


# --- 3. create ---------------------------------------------------------------------------------


def key(batch: Batch) -> str:
    """What the batch's metadata names it by at the service."""
    return f"{batch.pk}:{batch.created_at:%Y%m%d%H%M%S}"


def _create(batch: Batch) -> None:
    client = client_for(batch.provider)
    # Read back to when this batch was written: SearchIncomplete (retried later) if the
    # service's list is too long to tell; only "not there" creates it.
    state = client.find_batch(key(batch), since=batch.created_at)
    if state is None:
        if batch.cancel_requested:
            _collect(batch, client=None, state=None, reason="Stopped before the batch was sent.")
            return
        _step("before_create")
        state = client.create(
            key=key(batch),
            input_file_id=batch.input_file_id,
            endpoint=batch.endpoint,
            # Inline batches (Gemini) send the lines with the create call.
            lines=lambda: _lines(batch, client).get(batch.endpoint, []),
        )
    _step("after_create")
    Batch.objects.filter(pk=batch.pk, step=Batch.Step.UPLOADED).update(
        step=Batch.Step.SUBMITTED,
        batch_id=state.id,
        status=state.status,
        message="",
        submitted_at=Now(),
        next_check_at=later(_poll_wait(0)),
        checks=0,
        updated_at=Now(),
    )
    submitted = timezone.localtime(db_now()).strftime("%H:%M")
    Illustration.objects.filter(claimed_by=batch.holder, status__in=WORKING_STATUSES).update(
        progress_note=f"In a batch · submitted {submitted} · usually within a few hours",
        updated_at=Now(),
    )


# --- 4. check and collect ----------------------------------------------------------------------


def _check(batch: Batch) -> None:
    client = client_for(batch.provider)
    state = None
    if batch.cancel_requested and batch.status not in (*ENDED, "cancelling"):
        try:
            state = client.cancel(batch.batch_id)
        except ProviderError as error:
            if error.outcome in (Outcome.OUT_OF_CREDITS, Outcome.AUTH):
                raise
            # It ended meanwhile (OpenAI: 409; Gemini: FAILED_PRECONDITION), or the service
            # refuses to cancel it: read it as it is.
            logger.info("Batch %s: cancel refused (%s); reading it", batch.pk, error.message)
    if state is None:
        state = client.retrieve(batch.batch_id)
    Batch.objects.filter(pk=batch.pk).update(
        status=state.status,
        total=state.total or batch.total,
        completed=state.completed,
        failed=state.failed,
        checks=batch.checks + 1,
        next_check_at=later(_poll_wait(batch.checks + 1)),
        message="",  # as after upload and create: an earlier failed look is over
        updated_at=Now(),
    )
    # The pages stay held while the batch is out.
    Illustration.objects.filter(claimed_by=batch.holder).renew(
        worker_id=batch.holder, lease=BATCH_LEASE
    )
    if state.ended:
        batch.refresh_from_db()
        _collect(batch, client=client, state=state, reason=_end_reason(state))


def _end_reason(state) -> str:
    if state.status == "expired":
        return (
            "The batch expired before the service drew this page (24 hours). Draw it now, "
            "or in another batch."
        )
    if state.status == "cancelled":
        return "Stopped: the batch was canceled before the service drew this page."
    if state.status == "failed":
        return f"The service refused the batch: {state.message or 'no reason given'}"
    return "The batch ended without this page's result."


def _collect(batch: Batch, *, client, state, reason: str, refused: bool = False) -> None:
    """Enter every result line once, then hand back the pages the batch never drew (with
    refused, or a batch that failed whole, they fail with the reason instead)."""
    kind = KINDS["illustration"]
    if client is not None and state is not None:
        for cid, result in client.results(state):
            attempt = _open_lines(batch).filter(idempotency_key=cid).first()
            if attempt is None:
                if not isinstance(result, ProviderError):
                    _enter_orphan(batch, kind, cid, result, client)
                continue  # entered already (a collect cut off before), or its page is gone
            if isinstance(result, ProviderError):
                _fail_attempt(batch, attempt, result)
            else:
                _keep(batch, kind, attempt, result, client)
            _step("mid_collect")
    failed_whole = refused or (state is not None and state.status == "failed")
    for attempt in _open_lines(batch):
        with transaction.atomic():
            closed = GenerationAttempt.objects.filter(
                pk=attempt.pk, outcome=Outcome.IN_FLIGHT
            ).update(
                outcome=Outcome.REJECTED if failed_whole else Outcome.INTERRUPTED,
                finished_at=Now(),
                message=reason[:2000],
            )
            if not closed:
                continue
            rows = Illustration.objects.filter(pk=attempt.illustration_id)
            if failed_whole:
                rows.fail(worker_id=batch.holder, reason="rejected", message=reason)
            else:
                JOB.move(
                    rows,
                    "batch_returned",
                    context={"worker_id": batch.holder},
                    claimed_by="",
                    lease_expires_at=None,
                    progress_note="",
                    error_message=reason[:2000],
                    finished_at=Now(),
                    updated_at=Now(),
                )
    Batch.objects.filter(pk=batch.pk).update(
        step=Batch.Step.COLLECTED,
        status=state.status if state is not None else "cancelled",
        ended_at=Now(),
        next_check_at=None,
        message=(state.message if state is not None else reason)[:2000],
        updated_at=Now(),
    )
    if batch.run_id:
        settle_run(batch.run_id)


def _keep(batch: Batch, kind, attempt: GenerationAttempt, result, client) -> None:
    """Store a result line's picture, then in one transaction close its journal row, enter
    its charge (half what the same answer costs live: its usage, or the list price) and
    complete its page: all of it once, or none of it."""
    live, basis = kind.charged(client, result)
    price = (
        None if live is None else (live * BATCH_DISCOUNT).quantize(CENT_HUNDREDTH, ROUND_HALF_UP)
    )
    job = claimed_rows(kind).filter(pk=attempt.illustration_id).first()
    worker = JobWorker(kind)
    worker.id, worker.job, worker.provider = batch.holder, job, None
    name = attempt.storage_name
    if job is None:
        stored = ""
    elif kind.stored_result(job, name) is not None:
        stored = name  # stored before a collect that was cut off
    else:
        stored = kind.store(worker, result, name)
    with transaction.atomic():
        closed = GenerationAttempt.objects.filter(pk=attempt.pk, outcome=Outcome.IN_FLIGHT).update(
            outcome=Outcome.SUCCESS,
            finished_at=Now(),
            http_status=result.http_status,
            provider_request_id=(result.request_id or "")[:120],
            storage_name=stored,
            cost=price or 0,
        )
        if not closed:
            transaction.set_rollback(True)
            return
        _enter(batch, kind, attempt.pk, price, basis)
        if job is not None:
            kind.complete(worker, result)
            Illustration.objects.filter(pk=job.pk).update(progress_note="")


def _enter_orphan(batch: Batch, kind, cid: str, result, client) -> None:
    """Enter the charge of a line whose page (or project) was deleted while the batch was
    out: its journal row went with the page, but the service bills the line. Entered once,
    under an id of its own (negative: no journal row has it) made of the batch and the job."""
    if GenerationAttempt.objects.filter(provider_job_id=batch.holder, idempotency_key=cid).exists():
        return  # its row is there and closed: entered already
    live, basis = kind.charged(client, result)
    if live is None:
        return
    amount = (live * BATCH_DISCOUNT).quantize(CENT_HUNDREDTH, ROUND_HALF_UP)
    _enter(batch, kind, -(batch.pk * 10**9 + _job_id(cid)), amount, basis)


def _enter(batch: Batch, kind, attempt_id: int, amount, basis) -> None:
    """Enter a line's charge in the ledger, confirmed, under the batch's project, run,
    account and model."""
    ledger.enter(
        attempt_id=attempt_id,
        amount=amount,
        basis=basis,
        confirmed=True,
        project_id=batch.project_id,
        run_id=batch.run_id,
        kind=kind.name,
        account=batch.account,
        provider=batch.provider,
        model=batch.model,
    )


def _fail_attempt(batch: Batch, attempt: GenerationAttempt, error: ProviderError) -> None:
    """A line the service failed fails its page with the service's reason (a refused prompt
    stays refused, as for a live call); the service charges nothing for it."""
    with transaction.atomic():
        closed = GenerationAttempt.objects.filter(pk=attempt.pk, outcome=Outcome.IN_FLIGHT).update(
            outcome=error.outcome,
            finished_at=Now(),
            http_status=error.http_status,
            error_code=(error.code or "")[:80],
            message=error.message[:2000],
        )
        if closed:
            reason = "rejected" if error.outcome == Outcome.REJECTED else "exhausted"
            Illustration.objects.filter(pk=attempt.illustration_id).fail(
                worker_id=batch.holder,
                reason=reason,
                message=error.message,
                attempts_made=1,
                progress_note="",
            )


def _fail_line(batch: Batch, job, error: ProviderError) -> None:
    attempt = _open_lines(batch).filter(illustration_id=job.pk).first()
    if attempt is not None:
        error.outcome = Outcome.REJECTED
        _fail_attempt(batch, attempt, error)


def _after_error(batch: Batch, error: ProviderError) -> None:
    """A step's call failed: an account that needs a person halts (as for live calls), and
    the step is tried again later, backing off."""
    Batch.objects.filter(pk=batch.pk).update(
        checks=batch.checks + 1,
        next_check_at=later(_poll_wait(batch.checks + 1)),
        message=error.message[:2000],
        updated_at=Now(),
    )
    if error.outcome in (Outcome.OUT_OF_CREDITS, Outcome.AUTH):
        from .runs import halt_message

        provider = client_for(batch.provider)
        message = halt_message(error.outcome, error, provider=provider, service="image service")
        halt_account(batch.account, reason=error.outcome, message=message, provider=provider)
    elif not error.retryable and batch.step != Batch.Step.SUBMITTED:
        # The service refused the batch itself (an invalid request, a model it will not
        # batch): trying again would be refused again. Nothing was made: its pages fail
        # with the service's reason, for Retry failed (now or in another batch).
        batch.refresh_from_db()
        _collect(
            batch,
            client=None,
            state=None,
            reason=f"The service refused the batch: {error.message}",
            refused=True,
        )
    else:
        logger.warning("Batch %s: %s; trying again later", batch.pk, error.message)


# --- Stop, and what pages and commands read ----------------------------------------------------


def cancel_for_run(run_id: int) -> int:
    """Stop: ask the next check to cancel the run's batches at the service (due at once).
    Return how many batches were still out."""
    return (
        Batch.objects.filter(run_id=run_id)
        .exclude(step=Batch.Step.COLLECTED)
        .update(cancel_requested=True, next_check_at=Now(), updated_at=Now())
    )
