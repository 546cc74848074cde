"""The three state machines of the work: a job's, a run's and a provider account's.

Each is one table: for every transition, the states it leaves from, the state it goes to
and the guards its UPDATE carries. Every change of state is one conditional UPDATE made
from the table by `Machine.move`, so a guard written for a transition is there on every
path that takes it (a halt from a worker, the sweep or a probe; a resume from the page,
the admin or a command). tests/test_machines.py walks the tables.

The lock order, written once: a writer that changes several rows in one transaction
takes them in this order, and a single-row compare-and-set takes no other row's lock:

    project → run → job → attempt → account

(services lock the project's row first; a job's transition moves its project's change
counter in the same statement order; an account's row is last and is never held while a
project's row is wanted.) A writer that needs several projects' rows takes them all at
once, in id order, before anything else: an account's change moves every open project's
counter first (Project.objects.mark_changed_with_open_runs), and a Resume that continues
every run an account halted takes all their rows up front (services._lock), never its own
project's and later the others'. No queryset's update() takes another row's lock behind
its caller's back.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Now

LOCK_ORDER = ("project", "run", "job", "attempt", "account")


@dataclass(frozen=True)
class Transition:
    sources: frozenset[str]
    target: str | None  # None: the state stays (a guarded renewal)
    guards: tuple[str, ...] = ()
    doc: str = ""
    # Fields the transition always writes (a resume clears the halt's reason and message):
    # written in the table, so no path that takes it can forget one.
    sets: dict = field(default_factory=dict)


class Machine:
    """A table of transitions over one state field, and the guards they may name. A guard
    is a function of the caller's context (worker_id, now, account, …) returning a Q."""

    def __init__(
        self,
        name: str,
        *,
        field: str,
        states: tuple[str, ...],
        guards: dict[str, Callable[..., Q]],
        transitions: dict[str, Transition],
    ):
        self.name, self.field, self.states = name, field, states
        self.guards, self.transitions = guards, transitions
        for label, transition in transitions.items():
            unknown = (set(transition.sources) | {transition.target or states[0]}) - set(states)
            assert not unknown, f"{name}.{label}: unknown states {unknown}"
            missing = set(transition.guards) - set(guards)
            assert not missing, f"{name}.{label}: unknown guards {missing}"

    def eligible(self, rows: QuerySet, name: str, **context) -> QuerySet:
        """Return the rows the transition may move now: in a source state, every guard
        holding. A transition's UPDATE reads these conditions in its own WHERE."""
        transition = self.transitions[name]
        rows = rows.filter(**{f"{self.field}__in": sorted(transition.sources)})
        for guard in transition.guards:
            rows = rows.filter(self.guards[guard](**context))
        return rows

    def move(self, rows: QuerySet, name: str, *, context: dict | None = None, **fields) -> int:
        """Make the transition on the eligible rows with one UPDATE; return rows moved
        (0: another writer got there first, or a guard said no: change and call nothing)."""
        transition = self.transitions[name]
        fields = {**transition.sets, **fields}
        if transition.target is not None:
            fields[self.field] = transition.target
        return self.eligible(rows, name, **(context or {})).update(**fields)

    def sources_of(self, name: str) -> tuple[str, ...]:
        return tuple(sorted(self.transitions[name].sources))


def T(sources, target, *guards, doc="", sets=None):
    return Transition(frozenset(sources), target, tuple(guards), doc, dict(sets or {}))


# --- the job ----------------------------------------------------------------------------
# queued → generating ⇄ retrying → complete | failed | canceled; complete → replaced (a
# newer picture took over) ⇄ complete (the editor used it again); replaced → discarded.
# generating → awaiting (its picture is being made at the service, which calls a webhook
# when it ends: no worker holds it) → queued (the webhook came, or it is overdue: a worker
# fetches the result) | canceled (Stop).

QUEUED, GENERATING, RETRYING = "queued", "generating", "retrying"
COMPLETE, FAILED, CANCELED = "complete", "failed", "canceled"
REPLACED, DISCARDED = "replaced", "discarded"
AWAITING = "awaiting"
WORKING = (GENERATING, RETRYING)


def _run_is(*states: str) -> Exists:
    # Conditions in compare-and-set UPDATEs must not join: Django turns a joined UPDATE
    # into `WHERE id IN (SELECT ...)`, which PostgreSQL does not re-check against the row
    # it waited for, so two workers could both "win" the same job.
    from .models import Run

    return Exists(Run.objects.filter(pk=OuterRef("run_id"), state__in=states))


def _run_over(**_) -> Q:
    return Q(run__isnull=True) | Q(_run_is("stopping", "stopped"))


JOB = Machine(
    "job",
    field="status",
    states=(
        QUEUED,
        GENERATING,
        RETRYING,
        AWAITING,
        COMPLETE,
        FAILED,
        CANCELED,
        REPLACED,
        DISCARDED,
    ),
    guards={
        "held": lambda worker_id, **_: Q(claimed_by=worker_id),
        "run_running": lambda **_: Q(_run_is("running")),
        "run_over": _run_over,
        "run_not_over": lambda **_: ~_run_over(),
        "expired": lambda now=None, **_: Q(lease_expires_at__lt=now if now is not None else Now()),
        "fresh": lambda now=None, **_: Q(lease_expires_at__gte=now if now is not None else Now()),
        # The time its webhook should have come by has passed.
        "overdue": lambda now=None, **_: Q(next_attempt_at__lte=now if now is not None else Now()),
    },
    transitions={
        "claim": T([QUEUED], GENERATING, "run_running", doc="a worker takes it"),
        "renew": T(WORKING, None, "held", "fresh", doc="a beat, while a call is in flight"),
        "renew_running": T(WORKING, None, "held", "run_running", "fresh", doc="a beat, waiting"),
        # A beat after three silent ones: the card said "Waiting for the worker"; the
        # write that renews the lease stamps the row, so the change shows.
        "revive": T(WORKING, None, "held", "expired", doc="its silent worker is heard again"),
        "revive_running": T(WORKING, None, "held", "run_running", "expired"),
        "start_attempt": T(WORKING, GENERATING, "held", "run_running", doc="a call goes out"),
        "wait_to_retry": T(WORKING, RETRYING, "held", doc="backing off"),
        "defer": T(WORKING, QUEUED, "held", doc="a long wait: back with its next-try time"),
        "give_back": T(WORKING, QUEUED, "held", "run_not_over", doc="paused or halted"),
        "give_back_stopped": T(WORKING, CANCELED, "held", "run_over", doc="stopped"),
        "reclaim": T(WORKING, QUEUED, "expired", "run_not_over", doc="its worker was lost"),
        "reclaim_stopped": T(WORKING, CANCELED, "expired", "run_over"),
        "reclaim_failed": T(WORKING, FAILED, "expired", doc="lost on its last attempt"),
        "fail": T(WORKING, FAILED, "held", doc="rejected, or out of attempts"),
        "complete": T(WORKING, COMPLETE, "held", doc="the picture is kept"),
        "keep_as_version": T(WORKING, REPLACED, "held", doc="a variant beside the current"),
        # A paid picture in storage whose job nobody holds (its worker lost the claim while
        # the call ran and the sweep queued it again; or the sweep finishing a dead
        # worker's job): kept, never paid for again.
        "complete_unheld": T([QUEUED], COMPLETE, doc="a stored paid picture, job unheld"),
        "keep_unheld_as_version": T([QUEUED], REPLACED),
        "cancel_queued": T([QUEUED], CANCELED, doc="Stop: queued work is canceled"),
        # Webhooks (generation.webhooks): the worker that created the service's job lets it
        # go at once; the delivery, or the sweep once it is overdue, queues it again for
        # one worker to fetch the result. A stop cancels it (and it, at the service).
        "await_service": T(
            [GENERATING],
            AWAITING,
            "held",
            "run_not_over",
            doc="made at the service, which calls back (a stopped run's is canceled instead)",
        ),
        "delivered": T([AWAITING], QUEUED, doc="its webhook came: fetch the result"),
        "overdue": T([AWAITING], QUEUED, "overdue", doc="no webhook in time: poll it"),
        "cancel_awaiting": T([AWAITING], CANCELED, doc="Stop: canceled at the service too"),
        # A batch that ended (expired, canceled, failed whole) without this page's line:
        # the page is missing again, for Now or another batch (generation.batches).
        "batch_returned": T(WORKING, CANCELED, "held", doc="its batch ended without it"),
        "step_aside": T([COMPLETE], REPLACED, doc="a newer picture of the page is kept"),
        "use_again": T([REPLACED], COMPLETE, doc="the editor chose an earlier version"),
        "discard": T([REPLACED], DISCARDED, doc="the editor deleted a version"),
    },
)


# --- the run ----------------------------------------------------------------------------

RUNNING, PAUSED, STOPPING, STOPPED = "running", "paused", "stopping", "stopped"
HALTED, FINISHED = "halted", "finished"
OPEN = (RUNNING, PAUSED, STOPPING, HALTED)


def _account_halted(account: str = "", **_) -> Q:
    from .models import ProviderAccount

    return Q(Exists(ProviderAccount.objects.filter(key=account, state__in=(HALTED, PROBING))))


# What a run's resume clears: the halt's word, and what halted it.
HALT_CLEARED = {"halt_reason": "", "message": "", "halted_account": ""}

RUN = Machine(
    "run",
    field="state",
    states=(RUNNING, PAUSED, STOPPING, STOPPED, HALTED, FINISHED),
    guards={
        # A run halts for its account only while the account is halted: a worker that
        # read the account just before a Resume never halts a run again after it.
        "account_halted": _account_halted,
        "halted_by": lambda account, **_: Q(halted_account=account),
    },
    transitions={
        "pause": T([RUNNING], PAUSED),
        "stop": T(OPEN, STOPPING, doc="calls in flight finish, the queue is canceled"),
        "stopped": T([STOPPING], STOPPED, doc="nothing is in flight any more"),
        "finish": T([RUNNING], FINISHED, doc="nothing is left to do"),
        "halt": T([RUNNING], HALTED, doc="budget (this run); storage, a model (all using it)"),
        "halt_for_account": T([RUNNING], HALTED, "account_halted"),
        "resume": T(
            [PAUSED, HALTED, STOPPING],
            RUNNING,
            sets={**HALT_CLEARED, "finished_at": None, "end_notice": ""},  # its end is news
        ),
        "resume_for_account": T(
            [HALTED],
            RUNNING,
            "halted_by",
            doc="what halted it (an account, the storage, a model) continues",
            sets={**HALT_CLEARED, "finished_at": None, "end_notice": ""},
        ),
        "carry_probe": T(
            [HALTED],
            RUNNING,
            "halted_by",
            doc="one run tries its downed account; its halt is over unless the probe fails, "
            "and halting again then is no news (end_notice stays)",
            sets=HALT_CLEARED,
        ),
    },
)


# --- the provider account ---------------------------------------------------------------
# ok → halted (out of credits, auth: a person resumes; outage: probes heal it);
# halted (outage) → probing → ok | halted. A cool-down is a time on an ok account. A halt
# that needs a person may replace an outage; an outage never replaces anything.

OK, PROBING = "ok", "probing"


ACCOUNT = Machine(
    "account",
    field="state",
    states=(OK, "cooling", HALTED, PROBING),
    guards={
        # The failure of a call that started before the account was last set going is old
        # news: the editor's Resume answered it already.
        "not_resumed_since": lambda call_started=None, **_: (
            Q()
            if call_started is None
            else Q(resumed_at__isnull=True) | Q(resumed_at__lte=call_started)
        ),
        "outage": lambda **_: Q(reason="outage"),
        # Halting again for the reason it is halted for already is no news.
        "news": lambda reason="", **_: ~Q(state=HALTED, reason=reason),
        "probe_stale": lambda stale_before=None, **_: (
            Q() if stale_before is None else Q(updated_at__lt=stale_before)
        ),
        "probe_due": lambda now=None, **_: Q(next_probe_at__lte=now if now is not None else Now()),
        "probe_free": lambda **_: Q(probe_by=""),
        "probe_mine": lambda worker_id, **_: Q(probe_by=worker_id),
    },
    transitions={
        "halt": T(
            [OK, HALTED, PROBING],
            HALTED,
            "not_resumed_since",
            "news",
            doc="out of credits, auth: a person must act; it replaces an outage",
        ),
        "halt_outage": T(
            [OK],
            HALTED,
            "not_resumed_since",
            doc="only an ok account: a 503 never overwrites a halt that needs a person",
        ),
        "start_probe": T([HALTED], PROBING, "outage", "probe_due"),
        "take_probe": T([PROBING], None, "probe_free", doc="one worker makes the probe"),
        # A probe's verdict counts only while the account is still probing by its worker:
        # an editor's Resume (or a halt that needs a person) answered it already.
        "probe_failed": T([PROBING], HALTED, "probe_mine"),
        "probe_succeeded": T([PROBING], OK, "probe_mine", doc="also a rejected page"),
        "probe_given_back": T(
            [PROBING], HALTED, "probe_mine", doc="its call never went out: it proves nothing"
        ),
        "probe_lost": T(
            [PROBING], HALTED, "probe_stale", doc="its worker died: the sweep tries again"
        ),
        "resume": T([HALTED, PROBING], OK),
    },
)

MACHINES = (JOB, RUN, ACCOUNT)
