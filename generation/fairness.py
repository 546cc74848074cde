"""Fair turns: whose job a worker claims next.

The broker holds one task per queued job, first in, first out; but a task does not stand
for its own run's job. Each task claims the job whose turn it is across every running
run with due work of its kind, so the count of tasks still equals the work, and a
160-page book queued first no longer starves an 8-page book queued after it.

The rule, InvokeAI's per-user round robin one level deeper (its dequeue orders users by
the latest start of their work, least recent first, never-served first):

1. Owners take turns: the owner whose work was claimed least recently goes first; an
   owner never served goes before everyone. "Recently" is counted in claims, not time:
   each claim stamps its run with the next number of a studio-wide count (Run.turn).
2. Within an owner, projects take turns the same way (a project has one open run).
3. Within a run, the kind's own order: "Generate next" first, then page order.

Account limits still hold: a run whose provider account is halted or cooling down, or
that is at a concurrency or requests-per-minute limit, waits behind every run that can
call now. It is passed over, never dropped: with nothing else due a worker still claims
it (and waits for its slot, or halts the run), so no task ends while work is due.
"""

import functools
from dataclasses import dataclass, replace
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery, Value
from django.db.models.functions import Now

from . import prepared
from .clock import db_now
from .limits import provider_key
from .models import Job, ProviderAccount, ProviderGate, ProviderSlot, Run
from .providers import account_of


@dataclass(frozen=True)
class Turn:
    """A running run with due work: who owns it and when each was last served."""

    run_id: int
    project_id: int
    owner_id: int
    turn: int  # the number of the run's last claim (0: never served)
    owner_turn: int  # the number of the owner's last claim, in any of their runs
    blocked: bool = False  # its account or a limit holds its calls back right now


def due() -> Q:
    """A condition on jobs: queued and due now (not waiting out a Retry-After)."""
    return Q(status=Job.Status.QUEUED) & (
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=Now())
    )


def candidates(kind) -> list[Turn]:
    """Return the running runs with due jobs of the kind (one query), blocked marked."""
    sql, params = _candidates_statement(kind, connection.alias)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
    turns = [
        Turn(
            run_id=row["pk"],
            project_id=row["project_id"],
            owner_id=row["project__owner_id"],
            turn=row["turn"],
            owner_turn=row["owner_turn"] or 0,
        )
        for row in rows
    ]
    if len(turns) < 2:
        return turns  # nothing to choose between: no need to look at limits
    held = blocked_runs(kind, rows)
    return [replace(turn, blocked=True) if turn.run_id in held else turn for turn in turns]


@functools.cache
def _candidates_statement(kind, alias: str) -> tuple[str, tuple]:
    """Return candidates' SQL and parameters, built once per kind and database: it reads
    nothing that changes between claims (its time is the database's Now()), and on SQLite
    it runs while the claiming worker holds the write lock, which building it with the ORM
    on every claim kept longer than running it."""
    owner_turn = Run.objects.filter(project__owner=OuterRef("project__owner")).order_by("-turn")
    rows = (
        Run.objects.using(alias)
        .filter(state=Run.State.RUNNING)
        .filter(Exists(kind.model.objects.filter(due(), run=OuterRef("pk"))))
        .annotate(owner_turn=Subquery(owner_turn.values("turn")[:1]))
        .values(
            "pk",
            "project_id",
            "project__owner_id",
            "turn",
            "owner_turn",
            "project__image_service",
            "project__max_concurrent",
            "project__requests_per_minute",
        )
    )
    return rows.query.get_compiler(using=alias).as_sql()


def order(turns: list[Turn]) -> list[Turn]:
    """Return the turns fairest first: runs that can call now before blocked ones; then
    the owner served least recently; then, within an owner, the run served least
    recently; then the older run."""

    def key(turn: Turn):
        return (turn.blocked, turn.owner_turn, turn.turn, turn.run_id)

    return sorted(turns, key=key)


def next_runs(kind) -> list[int]:
    """Return the ids of the runs with due jobs of the kind, in the order to try them."""
    return [turn.run_id for turn in order(candidates(kind))]


def take(turn: Turn) -> bool:
    """Stamp the run as served now, if no other worker served it since it was read (a
    compare-and-set on its turn number); return whether this worker took the turn."""
    return bool(Run.objects.filter(pk=turn.run_id, turn=turn.turn).update(turn=_next()))


def _next():
    """An expression: the next number of the studio-wide count of claims."""
    return Subquery(Run.objects.order_by("-turn").values("turn")[:1]) + Value(1)


def served(run_id: int, *, conflicts: int = 0) -> None:
    """Record that a worker just claimed one of the run's jobs (after conflicts lost
    races): its owner's and its own turn move to the back."""
    prepared.write("served", _served, table=Run._meta.db_table, run_id=run_id, conflicts=conflicts)


def _served(*, run_id: int, conflicts: int) -> int:
    return Run.objects.filter(pk=run_id).update(
        turn=_next(), claims=F("claims") + 1, claim_conflicts=F("claim_conflicts") + conflicts
    )


def blocked_runs(kind, rows: list[dict]) -> set[int]:
    """Return the runs among rows (candidates' values) whose next call could not start
    now: their account is halted or cooling down, or a concurrency or rate limit is
    reached for their provider or their project."""
    providers: dict[str, object] = {}
    account = {}
    limit_key = {}
    for row in rows:
        service = row["project__image_service"]
        if service not in providers:
            try:
                providers[service] = kind.provider_for(_ProjectChoice(service))
            except LookupError:  # no provider configured for this kind: its worker fails it
                providers[service] = None
        provider = providers[service]
        if provider is not None:
            account[row["pk"]] = account_of(provider)
            limit_key[row["pk"]] = provider_key(provider.name, getattr(provider, "model", ""))
    now = db_now()
    held = set()
    stopped = set(
        ProviderAccount.objects.filter(key__in=set(account.values()))
        .filter(Q(state=ProviderAccount.State.HALTED) | Q(cooldown_until__gt=now))
        .values_list("key", flat=True)
    )
    held |= {run for run, key in account.items() if key in stopped}

    provider_max = settings.STUDIO_PROVIDER_MAX_CONCURRENT
    project_max = {row["pk"]: row["project__max_concurrent"] for row in rows}
    if provider_max or any(project_max.values()):
        active = ProviderSlot.objects.filter(expires_at__gt=now)
        by_provider = dict(
            active.values("provider_key").annotate(n=Count("pk")).values_list("provider_key", "n")
        )
        by_project = dict(
            active.filter(project_id__in=[row["project_id"] for row in rows])
            .values("project_id")
            .annotate(n=Count("pk"))
            .values_list("project_id", "n")
        )
        for row in rows:
            run = row["pk"]
            busy = by_provider.get(limit_key.get(run), 0)
            if provider_max and busy >= provider_max:
                held.add(run)
            if project_max[run] and by_project.get(row["project_id"], 0) >= project_max[run]:
                held.add(run)

    provider_rate = settings.STUDIO_PROVIDER_REQUESTS_PER_MINUTE
    rated = {row["pk"]: row["project__requests_per_minute"] for row in rows}
    if provider_rate or any(rated.values()):
        keys = {f"project:{row['project_id']}" for row in rows if rated[row["pk"]]}
        if provider_rate:
            keys |= set(limit_key.values())
        gates = {gate.key: gate for gate in ProviderGate.objects.filter(key__in=keys)}
        for row in rows:
            run = row["pk"]
            checks = [(f"project:{row['project_id']}", rated[run])]
            if provider_rate and run in limit_key:
                checks.append((limit_key[run], provider_rate))
            for key, per_minute in checks:
                if per_minute and key in gates and not _has_token(gates[key], per_minute, now):
                    held.add(run)
    return held


def _has_token(gate: ProviderGate, per_minute: int, now: datetime) -> bool:
    """Whether the gate's bucket holds a call's worth now (as Gate._refill counts)."""
    tokens = gate.tokens
    if gate.refilled_at is not None:
        tokens += max(0.0, (now - gate.refilled_at).total_seconds()) * per_minute / 60
    return tokens >= 1


@dataclass(frozen=True)
class _ProjectChoice:
    """What kinds need of a project to name its provider: its image service."""

    image_service: str
