"""A run's life, which the services (an editor's Resume, a queue) and the engine (a worker
that halts, settles or probes) both move: setting runs going again, halting and settling
them, and handing their jobs to the broker. It imports neither of them, so neither imports
the other.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now
from django_q.tasks import async_task

from studio.models import Project

from . import accounts, broker, logs, notify, workers
from .kinds import KINDS, JobKind
from .machines import RUN
from .models import ACTIVE_STATUSES, Run
from .plain import SERVICE_SAID, without_service_text
from .providers.base import ProviderError

logger = logging.getLogger(__name__)

HALT_MESSAGES = {
    Run.HaltReason.OUT_OF_CREDITS: (
        "The {service} ({provider}) says the account is out of credits{status}. Add credits, "
        "then press Resume."
    ),
    Run.HaltReason.AUTH: (
        "The {service} ({provider}) refused the API key{status}. Check {key_setting}, then "
        "press Resume."
    ),
    Run.HaltReason.OUTAGE: (
        "The {service} ({provider}) failed {count} times in a row{status}; it looks like an "
        "outage. The studio tries one page again by itself in a moment, or press Resume "
        "when it is back."
    ),
    Run.HaltReason.CONFIG: "{detail} Fix {setting}, then press Resume.",
}


# --- the broker -------------------------------------------------------------------------


def enqueue_jobs(run_id: int, count: int, kind: str = "illustration") -> bool:
    """Hand the broker one task per job; each task claims the job whose turn it is, in
    this run or another (generation.fairness), so the tasks always match the work.

    Return False when the broker (Redis) cannot be reached: nothing is lost, since the jobs
    are queued in the database and the sweep (`top_up_broker`) hands them over once it
    answers; the editor is told so (`broker_missed`)."""
    # One broker for them all, pushed to in one go (generation.broker): async_task would
    # otherwise open a broker (and a Redis connection) and push to it per task.
    try:
        with broker.batched() as batch:
            for _ in range(count + spare_tasks(count)):
                async_task(
                    "generation.tasks.run_next_job",
                    run_id,
                    kind,
                    task_name=f"run-{run_id}-{kind}",
                    group=f"run-{run_id}",
                    broker=batch,
                )
    except broker.UNREACHABLE as error:
        logger.warning(
            "The broker cannot be reached (%s: %s): %s %s job(s) of run %s wait in the "
            "database for the sweep to hand them over",
            type(error).__name__,
            error,
            count,
            kind,
            run_id,
        )
        missed = _missed.get()
        if missed is not None:
            missed.append(run_id)
        return False
    return True


_missed: ContextVar[list[int] | None] = ContextVar("broker_missed", default=None)


@contextmanager
def broker_missed() -> Iterator[list[int]]:
    """Collect the runs whose jobs could not be handed to the broker within the block (an
    editor's control tells them the work waits for Redis)."""
    missed: list[int] = []
    token = _missed.set(missed)
    try:
        yield missed
    finally:
        _missed.reset(token)


def spare_tasks(count: int) -> int:
    """Return how many tasks to hand the broker beyond count jobs.

    Each cluster holds tasks ahead of its workers (its queue_limit, and the one its pusher
    is handing over). Once the broker runs dry, tasks held by a cluster whose workers are
    all busy would leave another cluster's idle workers without work while jobs wait: one
    more round of calls at the end of a book. A spare task per held place lets idle
    workers claim those jobs; the tasks left over claim nothing and call nothing."""
    held = (settings.Q_CLUSTER.get("queue_limit") or 1) + 1
    return min(count, held * len(workers.alive()))


def enqueue_on_commit(run: Run, counts: dict[str, int]) -> None:
    run_id = run.pk
    for kind, count in counts.items():
        if count:
            transaction.on_commit(lambda kind=kind, count=count: enqueue_jobs(run_id, count, kind))


def queued_counts(run: Run) -> dict[str, int]:
    """Return how many tasks a resumed run needs per kind: its queued jobs, and the jobs a
    worker still holds, which a worker that saw the halt may be giving back right now
    (a task with nothing left to claim calls nothing, so over-delivery is harmless)."""
    return {
        name: kind.model.objects.filter(run=run, status__in=ACTIVE_STATUSES).count()
        for name, kind in KINDS.items()
    }


# --- settling, halting, resuming ---------------------------------------------------------


def run_has_active_jobs(run_id: int) -> bool:
    return any(
        kind.model.objects.filter(run_id=run_id, status__in=ACTIVE_STATUSES).exists()
        for kind in KINDS.values()
    )


def settle_run(run_id: int) -> None:
    """Close the run if it has nothing left: running → finished, stopping → stopped."""
    with transaction.atomic():
        runs = Run.objects.filter(pk=run_id).locked()  # its project's row first
        run = runs[0] if runs else None
        if run is None or run.state not in (Run.State.RUNNING, Run.State.STOPPING):
            return
        if run_has_active_jobs(run_id):
            return
        state = Run.State.FINISHED if run.state == Run.State.RUNNING else Run.State.STOPPED
        transition = "finish" if state == Run.State.FINISHED else "stopped"
        RUN.move(Run.objects.filter(pk=run_id), transition, finished_at=Now(), updated_at=Now())
    logs.run_state(run, state)
    if state == Run.State.FINISHED:
        notify.run_ended(run_id)


def halt_message(reason: str, error: ProviderError | None, *, provider, service: str, count=0):
    """Return the banner for a halt: what happened, which service, which setting to fix."""
    status = f" (HTTP {error.http_status})" if error is not None and error.http_status else ""
    message = HALT_MESSAGES[reason].format(
        status=status,
        count=count,
        service=service,
        provider=getattr(provider, "name", "?"),
        key_setting=getattr(provider, "key_setting", "the API key setting"),
        detail=error.message if error is not None else "",
        setting=getattr(error, "setting", "") or "the service's settings",
    )
    if error is not None and error.message and reason != Run.HaltReason.CONFIG:
        message += f"{SERVICE_SAID}{error.message}"
    return message[:2000]


def halt_run(run_id: int, *, reason: str, message: str, account: str = "") -> bool:
    """Halt a running run for a reason retrying cannot fix (with account, only while that
    account is halted). Return whether this call halted it.

    The storage is the studio's, not a run's: a picture that cannot be saved halts every
    running run (each would pay for one it cannot keep), and one Resume continues them."""
    if reason == Run.HaltReason.STORAGE:
        running = Run.objects.filter(state=Run.State.RUNNING)
        return _halt_runs(
            running, "halt", key=accounts.STORAGE, reason=reason, message=message, first=run_id
        )
    halted = RUN.move(
        Run.objects.filter(pk=run_id),
        "halt_for_account" if account else "halt",
        context={"account": account},
        halt_reason=reason,
        message=message,
        halted_account=account,
        updated_at=Now(),
    )
    if halted:
        logger.warning("Run %s halted (%s): %s", run_id, reason, message)
        logs.run_state(run_id, Run.State.HALTED, reason=reason)
        notify.run_ended(run_id)
    return bool(halted)


def halt_account(
    key: str, *, reason: str, message: str, provider=None, call_started=None, run_id=None
) -> int:
    """Halt the account and every running run with work for it, unless it was set going
    again after `call_started` (accounts.halt). Return runs halted.

    The runs say what the account says, whichever call halted it: a 503 that comes back
    after the account ran out of credits halts them for credits, not for an outage. Only
    run_id, the run whose call this was, keeps the service's own words when they are the
    account's: they may quote that project's prompt."""
    accounts.halt(
        key,
        reason=reason,
        message=message,
        provider=getattr(provider, "name", ""),
        endpoint=getattr(provider, "base_url", ""),
        call_started=call_started,
    )
    account = accounts.state_of(key)
    if account["state"] != "halted":
        return 0  # set going again meanwhile
    waiting = Q(pk__in=[])
    for kind in KINDS.values():
        try:
            waiting |= kind.runs_on_account(key)
        except LookupError:  # no provider configured for this kind
            continue
    halted = _halt_runs(
        Run.objects.filter(waiting),
        "halt_for_account",
        key=key,
        reason=account["reason"],
        message=without_service_text(account["message"]),
    )
    if run_id is not None and account["message"] == message:
        Run.objects.filter(pk=run_id, state=Run.State.HALTED, halted_account=key).update(
            message=message
        )
    return halted


def halt_model(kind: JobKind, key: str, *, reason: str, message: str) -> int:
    """Halt every running run with work of the kind on the account: a wrong model or
    parameter is the kind's service and model's, not the account's key (a wrong clip model
    must not halt the picture projects on the same token). Return runs halted."""
    try:
        rows = Run.objects.filter(kind.runs_on_account(key))
    except LookupError:
        return 0
    halt_key = accounts.config_key(kind.name, key)
    return _halt_runs(rows, "halt", key=halt_key, reason=reason, message=message)


def _halt_runs(rows, transition: str, *, key: str, reason: str, message: str, first=None) -> int:
    """Halt the running runs among rows, marked with what halted them (key: one Resume
    continues them all). Their projects' rows are taken first, in id order. Return how
    many halted; with first, whether that run was among them."""
    with transaction.atomic():
        eligible = RUN.eligible(rows, transition, account=key)
        running = Run.objects.filter(pk__in=eligible.values("pk")).locked()
        halted = RUN.move(
            Run.objects.filter(pk__in=[run.pk for run in running]),
            transition,
            context={"account": key},
            halt_reason=reason,
            message=message,
            halted_account=key,
            updated_at=Now(),
        )
    for run in running:  # the runs that were running a moment ago are the ones it halted
        logger.warning("Run %s halted (%s): %s", run.pk, reason, message)
        logs.run_state(run.pk, Run.State.HALTED, reason=reason, project_id=run.project_id)
        notify.run_ended(run.pk)
    if first is not None:
        return any(run.pk == first for run in running)
    return halted


def set_running(run: Run) -> None:
    """Set the run running again. If an account (or the storage, or a model) halted it,
    that is one Resume for all it halted: the account is cleared and every other run it
    halted continues too (the caller took every open project's row first: _lock)."""
    account = run.halted_account
    if not RUN.move(Run.objects.filter(pk=run.pk), "resume", updated_at=Now()):
        return
    run.state = Run.State.RUNNING
    for name, value in RUN.transitions["resume"].sets.items():
        setattr(run, name, value)
    logs.run_state(run, Run.State.RUNNING)
    if account:
        resume_account(account)


def resume_account(key: str, *, probe_of: str = "") -> int:
    """Clear a halted provider account (or storage, or model halt) and continue every run
    it halted, each with its waiting jobs handed to the broker once (nothing is queued
    twice). Return how many runs continued.

    With probe_of (a worker's id), the worker's probe got through: the account is set
    going only if it is still that worker's probe, else nothing changes (an editor's
    Resume did it already, or a halt that needs a person came meanwhile).

    One transaction in the lock order: the runs' projects (in id order), the runs, then
    the account's row. Call it holding no project's row."""
    with transaction.atomic():
        # Every open project shows the account: their rows first, in id order, then the
        # runs' (their projects are among them), then the account's.
        Project.objects.mark_changed_with_open_runs()
        runs = Run.objects.filter(halted_account=key, state=Run.State.HALTED).locked()
        continued = 0
        for run in sorted(runs, key=lambda run: run.pk):
            rows = Run.objects.filter(pk=run.pk)
            if RUN.move(rows, "resume_for_account", context={"account": key}, updated_at=Now()):
                logs.run_state(run, Run.State.RUNNING)
                enqueue_on_commit(run, queued_counts(run))
                continued += 1
        if probe_of:
            if not accounts.probe_succeeded(key, worker_id=probe_of):
                transaction.set_rollback(True)
                return 0
        else:
            accounts.clear(key)
    return continued
