"""/metrics in the Prometheus text format, read from the database at each scrape.

Workers run in many processes on many machines, so nothing is counted in memory: every
figure is read from the rows every process writes (attempts, jobs, runs, the ledger,
provider accounts), with the prometheus_client library writing the format. Counters
derived from attempt rows can go down when pages are deleted (their attempts go with
them); Prometheus reads that as a counter reset. Spend comes from the ledger, which never
loses an entry.
"""

from django.db.models import Count, Q, Sum
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.utils import floatToGoString

from . import operations, workers
from .broker import UNREACHABLE
from .clock import db_now
from .kinds import KINDS
from .models import GenerationAttempt, Job, SpendEntry

# Upper bounds of the call-latency histogram, in seconds.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _calls():
    rows = (
        GenerationAttempt.objects.exclude(outcome=GenerationAttempt.Outcome.IN_FLIGHT)
        .annotate(service=operations.SERVICE, model_name=operations.MODEL)
        .values("service", "model_name", "outcome")
        .annotate(n=Count("pk"))
        .order_by("service", "model_name", "outcome")
    )
    calls = CounterMetricFamily(
        "studio_calls",
        "Calls made to services, by outcome class.",
        labels=["service", "model", "outcome"],
    )
    for row in rows:
        calls.add_metric([row["service"] or "", row["model_name"] or "", row["outcome"]], row["n"])
    return calls


def _latency():
    buckets = {
        f"le_{i}": Count("pk", filter=Q(duration_ms__lte=bound * 1000))
        for i, bound in enumerate(LATENCY_BUCKETS)
    }
    rows = (
        GenerationAttempt.objects.filter(duration_ms__isnull=False)
        .annotate(service=operations.SERVICE, model_name=operations.MODEL)
        .values("service", "model_name")
        .annotate(count=Count("pk"), total_ms=Sum("duration_ms"), **buckets)
        .order_by("service", "model_name")
    )
    histogram = HistogramMetricFamily(
        "studio_call_duration_seconds",
        "How long calls to services took.",
        labels=["service", "model"],
    )
    for row in rows:
        cumulative = [
            (floatToGoString(bound), row[f"le_{i}"]) for i, bound in enumerate(LATENCY_BUCKETS)
        ]
        histogram.add_metric(
            [row["service"] or "", row["model_name"] or ""],
            buckets=[*cumulative, ("+Inf", row["count"])],
            sum_value=(row["total_ms"] or 0) / 1000,
        )
    return histogram


def _jobs():
    jobs = GaugeMetricFamily("studio_jobs", "Jobs by kind and status.", labels=["kind", "status"])
    for name, kind in KINDS.items():
        counts = dict(kind.model.objects.values_list("status").annotate(n=Count("pk")).order_by())
        for status in Job.Status.values:
            jobs.add_metric([name, status], counts.get(status, 0))
    return jobs


def _spend():
    spend = CounterMetricFamily(
        "studio_spend_dollars",
        "What calls cost (USD), from the spend ledger.",
        labels=["account", "provider", "model", "confirmed"],
    )
    rows = (
        SpendEntry.objects.values("account", "provider", "model", "confirmed")
        .annotate(total=Sum("amount"))
        .order_by("account", "provider", "model", "confirmed")
    )
    for row in rows:
        labels = [row["account"], row["provider"], row["model"], str(row["confirmed"]).lower()]
        spend.add_metric(labels, float(row["total"]))
    return spend


class StudioCollector:
    """Collects every metric from the database when /metrics is scraped."""

    def collect(self):
        now = db_now()
        yield _calls()
        yield _latency()
        yield _jobs()
        yield _spend()
        runs = GaugeMetricFamily("studio_runs", "Runs by state.", labels=["state"])
        for state, count in operations.runs_by_state().items():
            runs.add_metric([state], count)
        yield runs
        accounts = GaugeMetricFamily(
            "studio_account_state",
            "Provider accounts: 1 for the state each is in (ok, cooling, halted).",
            labels=["account", "state", "reason"],
        )
        for account in operations.account_states(now=now):
            for state in ("ok", "cooling", "halted"):
                reason = account.reason if state == account.state == "halted" else ""
                accounts.add_metric([account.key, state, reason], int(state == account.state))
        yield accounts
        queues = operations.queues(now=now)
        oldest = queues.oldest
        yield GaugeMetricFamily(
            "studio_oldest_waiting_job_age_seconds",
            "How long the oldest queued job has waited (0 when none waits).",
            value=(now - oldest.oldest).total_seconds() if oldest else 0,
        )
        yield GaugeMetricFamily(
            "studio_stale_jobs",
            "Jobs whose worker's lease ran out (the sweep takes them back).",
            value=queues.stale,
        )
        try:
            alive = len(workers.alive(now=now))
        except UNREACHABLE:  # on Redis the clusters' heartbeats live there: no number
            alive = None
        yield GaugeMetricFamily(
            "studio_broker_reachable",
            "1 when the broker (and the clusters' heartbeats) could be read, else 0.",
            value=int(alive is not None),
        )
        if alive is not None:
            yield GaugeMetricFamily(
                "studio_worker_clusters_alive",
                "Worker clusters with a heartbeat younger than 60 s.",
                value=alive,
            )


def render() -> bytes:
    """Return the metrics in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StudioCollector())
    return generate_latest(registry)
