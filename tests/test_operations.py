"""The operations page: the whole studio at a glance, its numbers read from known rows."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from generation import operations, services
from generation.clock import db_now
from generation.models import (
    GenerationAttempt,
    Heartbeat,
    Illustration,
    ProviderAccount,
    Run,
    SpendEntry,
)

pytestmark = pytest.mark.django_db

Outcome = GenerationAttempt.Outcome


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_superuser("operator", "op@example.com", "op-pass")
    client.force_login(user)
    return client


def jobs(project, *, provider: str, model: str, count: int, status="complete"):
    run = Run.objects.create(project=project, state=Run.State.FINISHED)
    pages = list(project.pages.filter(illustrations__isnull=True).order_by("number"))
    Illustration.objects.bulk_create(
        Illustration(page=page, run=run, status=status, provider=provider, model=model)
        for page in pages[:count]
    )
    return list(Illustration.objects.filter(run=run).order_by("pk"))


def attempt(job, number, *, at, outcome="success", ms=1000):
    return GenerationAttempt(
        illustration=job, number=number, started_at=at, outcome=outcome, duration_ms=ms
    )


def test_the_call_chart_counts_each_call_in_its_five_minute_bar_and_window(make_project):
    project = make_project(pages=2)
    job = jobs(project, provider="openai", model="gpt-image-1", count=1)[0]
    now = db_now()
    bars = operations.call_chart(now=now).bars
    assert len(bars) == 12 and len(operations.call_chart(now=now, window="24h").bars) == 288
    inside = bars[3].start + timedelta(minutes=1)
    GenerationAttempt.objects.bulk_create(
        [
            attempt(job, 1, at=inside, outcome=Outcome.SUCCESS),
            attempt(job, 2, at=inside, outcome=Outcome.SUCCESS),
            attempt(job, 3, at=inside + timedelta(seconds=30), outcome=Outcome.TRANSIENT),
            attempt(job, 4, at=bars[11].start, outcome=Outcome.RATE_LIMITED),
            attempt(job, 5, at=now - timedelta(minutes=61), outcome=Outcome.LOST),
            attempt(job, 6, at=now - timedelta(hours=2), outcome=Outcome.OUT_OF_CREDITS),
            attempt(job, 7, at=now - timedelta(hours=25), outcome=Outcome.AUTH),
            attempt(job, 8, at=inside, outcome=Outcome.IN_FLIGHT, ms=None),
        ]
    )

    chart = operations.call_chart(now=now)
    assert [bar.counts for bar in chart.bars] == [
        {},
        {},
        {},
        {"success": 2, "transient": 1},
        *[{}] * 7,
        {"rate_limited": 1},
    ]
    assert chart.peak == 3
    assert {k: v for k, v in chart.totals.items() if v} == {
        "success": 2,
        "transient": 1,
        "rate_limited": 1,
    }
    day = operations.call_chart(now=now, window="24h")
    assert {k: v for k, v in day.totals.items() if v} == {
        "success": 2,
        "transient": 1,
        "rate_limited": 1,
        "lost": 1,
        "out_of_credits": 1,
    }


def test_latency_percentiles_are_nearest_rank_per_service_and_model(make_project):
    project = make_project(pages=2)
    openai = jobs(project, provider="openai", model="gpt-image-1", count=1)[0]
    embedded = jobs(project, provider="embedded", model="", count=1)[0]
    now = db_now()
    recent = now - timedelta(minutes=10)
    GenerationAttempt.objects.bulk_create(
        [attempt(openai, n, at=recent, ms=n * 100) for n in range(1, 21)]  # 100 … 2000 ms
        + [attempt(embedded, n, at=recent, ms=[30, 10, 20][n - 1]) for n in (1, 2, 3)]
        + [attempt(openai, 21, at=now - timedelta(hours=3), ms=99_000)]  # outside the hour
    )

    assert operations.latencies(now=now) == [
        operations.Latency("embedded", "", calls=3, p50_ms=20, p95_ms=30),
        operations.Latency("openai", "gpt-image-1", calls=20, p50_ms=1000, p95_ms=1900),
    ]
    day = {row.service: row for row in operations.latencies(now=now, window="24h")}
    assert (day["openai"].calls, day["openai"].p50_ms, day["openai"].p95_ms) == (21, 1100, 2000)


def test_spend_today_and_this_month_come_from_the_ledger_per_account(make_project):
    now = db_now()
    today = now.date()
    earlier_this_month = today.replace(day=1) if today.day > 1 else None
    entries = [
        ("openai|https://api.example|abc", "openai", today, "0.0420"),
        ("openai|https://api.example|abc", "openai", today, "0.0420"),
        ("replicate|https://r.example|def", "replicate", today, "0.5000"),
        ("openai|https://api.example|abc", "openai", today - timedelta(days=40), "9.0000"),
    ]
    if earlier_this_month:
        entries.append(("openai|https://api.example|abc", "openai", earlier_this_month, "1.0000"))
    SpendEntry.objects.bulk_create(
        SpendEntry(
            attempt_id=i,
            account=account,
            provider=provider,
            kind="illustration",
            day=day,
            amount=Decimal(amount),
            basis="price",
        )
        for i, (account, provider, day, amount) in enumerate(entries)
    )
    ProviderAccount.objects.create(
        key="openai|https://api.example|abc", provider="openai", endpoint="https://api.example"
    )

    spend = operations.spend_by_account(
        now=now, labels={a.key: a.label for a in operations.account_states(now=now)}
    )
    month = Decimal("1.0840") if earlier_this_month else Decimal("0.0840")
    assert [(s.label, s.today, s.month) for s in spend] == [
        ("openai at https://api.example", Decimal("0.0840"), month),
        ("replicate", Decimal("0.5000"), Decimal("0.5000")),
    ]


def test_queues_runs_accounts_and_stale_jobs(make_project):
    project = make_project(pages=6)
    run = services.generate_missing(project=project).run  # six queued
    held = list(Illustration.objects.filter(run=run).order_by("pk")[:2])
    Illustration.objects.filter(pk=held[0].pk).update(
        status="generating", claimed_by="w", lease_expires_at=db_now() - timedelta(minutes=3)
    )
    Illustration.objects.filter(pk=held[1].pk).update(
        status="generating", claimed_by="w", lease_expires_at=db_now() + timedelta(minutes=3)
    )
    halted = make_project(pages=1, title="Halted book")
    Run.objects.create(project=halted, state=Run.State.HALTED, halt_reason="out_of_credits")
    Run.objects.create(project=halted, state=Run.State.FINISHED)
    ProviderAccount.objects.create(
        key="openai|x|1", provider="openai", state="halted", reason="out_of_credits"
    )
    now = db_now()

    queues = operations.queues(now=now)
    assert [(q.kind, q.service, q.queued) for q in queues.depths] == [
        ("illustration", "embedded", 4)
    ]
    assert (
        queues.oldest.oldest
        == Illustration.objects.filter(status="queued").earliest("created_at").created_at
    )
    assert (queues.working, queues.stale) == (2, 1)
    assert operations.runs_by_state() == {
        "halted": 1,
        "running": 1,
        "stopping": 0,
        "paused": 0,
        "stopped": 0,
        "finished": 1,
    }
    assert [r.project.title for r in operations.open_runs()] == ["Halted book", "A Book"]
    states = {a.key: (a.state, a.reason) for a in operations.account_states(now=now)}
    assert states == {"openai|x|1": ("halted", "out_of_credits"), "embedded": ("ok", "")}


def test_the_operations_page_is_for_staff_only(client, editor):
    url = reverse("operations")
    assert client.get(url).status_code == 302  # to the admin's sign-in
    client.force_login(editor)
    assert client.get(url).status_code == 302


def test_the_page_shows_the_numbers_and_polls_every_10_s(staff, make_project):
    project = make_project(pages=3)
    job = jobs(project, provider="openai", model="gpt-image-1", count=1)[0]
    now = db_now()
    GenerationAttempt.objects.bulk_create(
        [
            attempt(job, 1, at=now - timedelta(minutes=1), ms=800),
            attempt(job, 2, at=now - timedelta(minutes=1), outcome=Outcome.TRANSIENT, ms=2400),
        ]
    )
    Heartbeat.beat(Heartbeat.SWEEP)

    html = staff.get(reverse("operations")).content.decode()
    assert 'hx-trigger="every 10s"' in html
    assert html.count('class="chart__bar chart__bar--success"') == 1
    assert html.count('class="chart__bar chart__bar--transient"') == 1
    assert re.search(r"success <strong>1</strong>", html)
    assert re.search(r"transient <strong>1</strong>", html)
    assert re.search(
        r'<tr class="latency-row"><td>openai</td><td>gpt-image-1</td><td class="num">2</td>'
        r'<td class="num">0.80 s</td><td class="num">2.40 s</td></tr>',
        html,
    )
    assert "No worker cluster is alive." in html
    assert re.search(r"Sweep: last ran \d+ s ago", html)
    assert "<script" not in html.split("</head>")[1]  # no inline script (CSP)
    assert "style=" not in html

    poll = staff.get(reverse("operations"), {"window": "24h"}, headers={"HX-Request": "true"})
    body = poll.content.decode()
    assert body.lstrip().startswith('<div id="ops-body"')
    assert "?window=24h" in body and "last 24 hours" in body


def test_resume_on_the_page_resumes_a_halted_account(staff, make_project):
    ProviderAccount.objects.create(
        key="openai|x|1", provider="openai", state="halted", reason="auth", message="bad key"
    )
    response = staff.post(reverse("operations-account-resume"), {"key": "openai|x|1"})
    assert response.status_code == 302
    assert ProviderAccount.objects.get(key="openai|x|1").state == "ok"


def test_the_page_costs_the_same_queries_for_100_and_100000_attempts(staff, make_project):
    project = make_project(pages=10)
    pictures = jobs(project, provider="openai", model="gpt-image-1", count=10)
    now = db_now()
    outcomes = [Outcome.SUCCESS] * 7 + [Outcome.TRANSIENT, Outcome.RATE_LIMITED, Outcome.LOST]

    def add_attempts(total: int) -> None:
        have = GenerationAttempt.objects.count()
        rows = []
        for i in range(have, total):
            job, number = pictures[i % 10], i // 10 + 1
            # Spread over the last 30 days: most are outside the hour, some inside.
            at = now - timedelta(seconds=(i * 26) % (30 * 86400))
            rows.append(attempt(job, number, at=at, outcome=outcomes[i % 10], ms=100 + i % 5000))
        GenerationAttempt.objects.bulk_create(rows, batch_size=5000)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            response = staff.get(reverse("operations"), {"window": "24h"})
        assert response.status_code == 200
        return len(captured)

    add_attempts(100)
    small = queries()
    add_attempts(100_000)
    assert GenerationAttempt.objects.count() == 100_000
    large = queries()
    # One of them reads the ORM broker's cluster heartbeats (with Redis, none: they live
    # there), one the session where it is in the database alone (PostgreSQL without
    # Redis); the queues cost two per kind of job (pictures, stories, clips, sheets,
    # upscales, covers).
    broker = "orm" in settings.Q_CLUSTER
    sessions = not settings.SESSION_ENGINE.endswith("cached_db")
    assert small == large == 21 + broker + sessions
