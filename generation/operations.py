"""What operators read: the whole studio at a glance, in a constant number of queries.

The operations page, /healthz and /metrics read from here. Every figure is an aggregate
the database computes (counts per minute, ranks within a window, sums from the ledger), so
the cost does not grow with the number of attempts; times are the database's clock.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db.models import Count, F, Min, Q, Sum, Window
from django.db.models.functions import Ceil, Coalesce, RowNumber, TruncMinute
from django_q.brokers import get_broker

from . import broker as brokers
from . import workers
from .clock import db_now
from .kinds import KINDS
from .models import (
    OPEN_RUN_STATES,
    WORKING_STATUSES,
    GenerationAttempt,
    Heartbeat,
    Job,
    ProviderAccount,
    Run,
    SpendEntry,
)
from .pricing import amount
from .providers import account_of

Outcome = GenerationAttempt.Outcome
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24)}
BUCKET = timedelta(minutes=5)
# The outcome classes the chart stacks, bottom to top (in flight: not over yet).
CHART_OUTCOMES = [o for o in Outcome.values if o != Outcome.IN_FLIGHT]

# The service and model a call went to: its job's, whatever kind of job it is (every kind,
# so a new one cannot leave its calls unnamed as character sheets' once were).
SERVICE = Coalesce(*(f"{kind.attempt_field}__provider" for kind in KINDS.values()))
MODEL = Coalesce(*(f"{kind.attempt_field}__model" for kind in KINDS.values()))


@dataclass
class Bar:
    start: datetime
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class CallChart:
    window: str
    bars: list[Bar]
    totals: dict[str, int]  # per outcome class over the window

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    @property
    def peak(self) -> int:
        return max((bar.total for bar in self.bars), default=0)


def _floor(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // step) * step


def window_bounds(now: datetime, window: str) -> tuple[datetime, datetime]:
    """Return the window's start and end: whole 5-minute bars, the last one holding now."""
    end = _floor(now, BUCKET) + BUCKET
    return end - WINDOWS[window], end


def call_chart(*, now: datetime, window: str = "1h") -> CallChart:
    """Return calls by outcome class in 5-minute bars over the window (one query: counts
    per minute and outcome, folded into bars here)."""
    start, end = window_bounds(now, window)
    bars = [Bar(start=start + i * BUCKET) for i in range(WINDOWS[window] // BUCKET)]
    totals = dict.fromkeys(CHART_OUTCOMES, 0)
    rows = (
        GenerationAttempt.objects.filter(started_at__gte=start, started_at__lt=end)
        .exclude(outcome=Outcome.IN_FLIGHT)
        .annotate(minute=TruncMinute("started_at", tzinfo=UTC))
        .values("minute", "outcome")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for row in rows:
        bar = bars[(row["minute"] - start) // BUCKET]
        bar.counts[row["outcome"]] = bar.counts.get(row["outcome"], 0) + row["n"]
        totals[row["outcome"]] = totals.get(row["outcome"], 0) + row["n"]
    return CallChart(window=window, bars=bars, totals=totals)


@dataclass(frozen=True)
class Latency:
    service: str
    model: str
    calls: int
    p50_ms: int
    p95_ms: int


def latencies(*, now: datetime, window: str = "1h") -> list[Latency]:
    """Return p50 and p95 call duration per service and model over the window (nearest
    rank, exact), in one query: the database ranks the durations and returns only the
    two ranks wanted per service and model."""
    group = [F("service"), F("model_name")]
    start, end = window_bounds(now, window)  # the chart's window
    rows = (
        GenerationAttempt.objects.filter(
            started_at__gte=start, started_at__lt=end, duration_ms__isnull=False
        )
        .annotate(service=SERVICE, model_name=MODEL)
        .annotate(
            rank=Window(RowNumber(), partition_by=group, order_by=F("duration_ms").asc()),
            total=Window(Count("pk"), partition_by=group),
        )
        .filter(Q(rank=Ceil(F("total") * 0.5)) | Q(rank=Ceil(F("total") * 0.95)))
        .values("service", "model_name", "rank", "total", "duration_ms")
        .order_by()
    )
    found: dict[tuple, dict] = {}
    for row in rows:
        entry = found.setdefault((row["service"] or "", row["model_name"] or ""), {})
        total = row["total"]
        if row["rank"] == -(-total * 50 // 100):
            entry["p50"] = row["duration_ms"]
        if row["rank"] == -(-total * 95 // 100):
            entry["p95"] = row["duration_ms"]
        entry["calls"] = total
    return [
        Latency(service=s, model=m, calls=e["calls"], p50_ms=e["p50"], p95_ms=e["p95"])
        for (s, m), e in sorted(found.items())
    ]


@dataclass(frozen=True)
class AccountSpend:
    account: str
    label: str
    today: Decimal
    month: Decimal


def spend_by_account(*, now: datetime, labels: dict[str, str]) -> list[AccountSpend]:
    """Return what each provider account spent today and this month (UTC days), from the
    ledger."""
    today = now.date()
    rows = (
        SpendEntry.objects.filter(day__gte=today.replace(day=1))
        .values("account", "provider")
        .annotate(month=Sum("amount"), today=Sum("amount", filter=Q(day=today)))
        .order_by("account")
    )
    return [
        AccountSpend(
            account=row["account"],
            label=labels.get(row["account"], row["provider"]),
            today=amount(row["today"]),
            month=amount(row["month"]),
        )
        for row in rows
    ]


@dataclass(frozen=True)
class AccountState:
    key: str
    label: str
    state: str  # ok, cooling, halted
    reason: str = ""
    message: str = ""
    until: datetime | None = None  # cool-down end, or next probe


def account_states(*, now: datetime) -> list[AccountState]:
    """Return every provider account the studio has called, with its state; the image
    service's account is listed (ok) even before its first call."""
    found = []
    for row in ProviderAccount.objects.order_by("key"):
        if row.state in (ProviderAccount.State.HALTED, ProviderAccount.State.PROBING):
            state = AccountState(
                row.key, row.label, "halted", row.reason, row.message, row.next_probe_at
            )
        elif row.cooldown_until is not None and row.cooldown_until > now:
            state = AccountState(
                row.key, row.label, "cooling", row.cooldown_reason, "", row.cooldown_until
            )
        else:
            state = AccountState(row.key, row.label, "ok")
        found.append(state)
    known = {state.key for state in found}
    for kind in KINDS.values():
        try:
            provider = kind.provider()
        except LookupError:
            continue
        key = account_of(provider)
        if key not in known:
            known.add(key)
            found.append(AccountState(key, provider.name, "ok"))
    return found


@dataclass(frozen=True)
class QueueDepth:
    kind: str
    service: str
    queued: int
    oldest: datetime | None


@dataclass
class Queues:
    depths: list[QueueDepth]
    working: int  # jobs a worker holds
    stale: int  # jobs whose worker's lease ran out: no worker is on them
    oldest_stale_lease: datetime | None

    @property
    def oldest(self) -> QueueDepth | None:
        waiting = [depth for depth in self.depths if depth.oldest is not None]
        return min(waiting, key=lambda depth: depth.oldest, default=None)


def queues(*, now: datetime) -> Queues:
    """Return queue depth per kind and service, the oldest waiting job, and jobs whose
    lease expired (two queries per kind of job)."""
    depths, working, stale, oldest_stale = [], 0, 0, None
    for name, kind in KINDS.items():
        try:
            configured = kind.provider().name
        except LookupError:
            configured = ""
        rows = (
            kind.model.objects.filter(status=Job.Status.QUEUED)
            .values("provider")
            .annotate(n=Count("pk"), oldest=Min("created_at"))
            .order_by("provider")
        )
        for row in rows:
            service = row["provider"] or configured or "—"
            depths.append(QueueDepth(name, service, row["n"], row["oldest"]))
        held = kind.model.objects.filter(status__in=WORKING_STATUSES).aggregate(
            working=Count("pk"),
            stale=Count("pk", filter=Q(lease_expires_at__lt=now)),
            oldest=Min("lease_expires_at", filter=Q(lease_expires_at__lt=now)),
        )
        working += held["working"]
        stale += held["stale"]
        if held["oldest"] is not None and (oldest_stale is None or held["oldest"] < oldest_stale):
            oldest_stale = held["oldest"]
    return Queues(depths=depths, working=working, stale=stale, oldest_stale_lease=oldest_stale)


RUN_ORDER = [
    Run.State.HALTED,
    Run.State.RUNNING,
    Run.State.STOPPING,
    Run.State.PAUSED,
    Run.State.STOPPED,
    Run.State.FINISHED,
]


def runs_by_state() -> dict[str, int]:
    """Return how many runs are in each state, halted first."""
    counts = dict(Run.objects.values_list("state").annotate(n=Count("pk")).order_by())
    return {state: counts.get(state, 0) for state in RUN_ORDER}


def open_runs(limit: int = 50) -> list[Run]:
    """Return the runs not over yet, halted first, then the most recent."""
    rank = {state: i for i, state in enumerate(RUN_ORDER)}
    runs = list(
        Run.objects.filter(state__in=OPEN_RUN_STATES)
        .select_related("project")
        .order_by("-created_at")[:limit]
    )
    return sorted(runs, key=lambda run: rank[run.state])


def sweep_last_run() -> datetime | None:
    return Heartbeat.objects.filter(name=Heartbeat.SWEEP).values_list("at", flat=True).first()


@dataclass
class Overview:
    now: datetime
    window: str
    chart: CallChart
    latencies: list[Latency]
    spend: list[AccountSpend]
    accounts: list[AccountState]
    runs: dict[str, int]
    open_runs: list[Run]
    queues: Queues
    sweep_at: datetime | None
    clusters: list[workers.Cluster]
    redis: brokers.RedisState | None = None  # None: the studio runs without Redis

    @property
    def sweep_age_s(self) -> float | None:
        return None if self.sweep_at is None else (self.now - self.sweep_at).total_seconds()

    @property
    def oldest_wait_s(self) -> float | None:
        oldest = self.queues.oldest
        return None if oldest is None else (self.now - oldest.oldest).total_seconds()

    @property
    def alive(self) -> list[workers.Cluster]:
        return [cluster for cluster in self.clusters if cluster.alive]


def overview(*, window: str = "1h") -> Overview:
    """Return everything the operations page shows."""
    now = db_now()
    accounts = account_states(now=now)
    redis = brokers.redis_state()
    clusters: list[workers.Cluster] = []
    if redis is None or redis.reachable:
        try:
            clusters = workers.clusters(now=now)  # their heartbeats are kept in Redis
        except brokers.UNREACHABLE as error:  # lost between the PING and now
            redis = brokers.RedisState(False, reason=f"{type(error).__name__}: {error}")
    return Overview(
        now=now,
        window=window,
        chart=call_chart(now=now, window=window),
        latencies=latencies(now=now, window=window),
        spend=spend_by_account(now=now, labels={a.key: a.label for a in accounts}),
        accounts=accounts,
        runs=runs_by_state(),
        open_runs=open_runs(),
        queues=queues(now=now),
        sweep_at=sweep_last_run(),
        clusters=clusters,
        redis=redis,
    )


def health() -> tuple[dict, list[str]]:
    """Return what /healthz reports, and which parts failed: the database and the broker
    must answer, and at least one worker cluster must have sent a heartbeat in the last
    60 s. No project data."""
    report: dict = {}
    failing: list[str] = []
    now = None
    try:
        now = db_now()
        report["database"] = "ok"
    except Exception as error:  # any driver's error: say which part failed
        report["database"] = f"error: {type(error).__name__}"
        failing.append("database")
    try:
        broker = get_broker()
        broker.ping()
        broker.queue_size()
        report["broker"] = "ok"
    except Exception as error:
        report["broker"] = f"error: {type(error).__name__}"
        failing.append("broker")
    try:
        found = workers.clusters(now=now) if now is not None else []
        alive = [cluster for cluster in found if cluster.alive]
        youngest = min((cluster.age_s for cluster in found), default=None)
        report["workers"] = {
            "alive": len(alive),
            "last_heartbeat_s": None if youngest is None else round(youngest),
        }
        if not alive:
            failing.append("workers")
    except Exception as error:
        report["workers"] = {"alive": 0, "last_heartbeat_s": None, "error": type(error).__name__}
        failing.append("workers")
    try:
        at = sweep_last_run() if now is not None else None
        report["sweep"] = {"last_run_s": None if at is None else round((now - at).total_seconds())}
    except Exception as error:
        report["sweep"] = {"last_run_s": None, "error": type(error).__name__}
    return report, failing
