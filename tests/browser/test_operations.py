"""Operators and editors in a real browser: the operations page, and the review page's
word on workers as a real cluster stops and starts."""

import random
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from generation import services, tasks
from generation.clock import db_now
from generation.models import (
    GenerationAttempt,
    Illustration,
    ProviderAccount,
    Run,
    SpendEntry,
)
from tests.browser.conftest import screenshot, sign_in
from tests.conftest import ARTIFACTS, openai_env, stop_process_group

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_review_page_says_when_no_workers_run_and_stops_saying_it_when_they_do(
    page, web_server, qcluster, fake_openai, make_project
):
    project = make_project(pages=12, title="Waiting Book")
    fake_openai.latency = 0.5  # two pages a second with one worker: time to watch
    env = openai_env(fake_openai, STUDIO_WORKERS=1)
    server = web_server(**env)
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    line = page.locator(".workers-line")

    page.get_by_role("button", name=re.compile("Generate Missing Illustrations")).click()
    expect(line).to_have_text(
        "No workers are running, so 12 pages are waiting. The studio continues when they start."
    )
    screenshot(page, "review-no-workers")

    cluster = qcluster(**env)
    expect(line).to_have_count(0, timeout=30_000)  # by itself, with the next poll
    expect(page.locator(".card--complete").first).to_be_visible(timeout=30_000)

    stop_process_group(cluster)  # it finishes what it has fetched, then stops
    assert cluster.returncode is not None
    waiting = Illustration.objects.filter(page__project=project, status="queued").count()
    assert 1 <= waiting <= 10
    expect(line).to_have_text(
        f"No workers are running, so {waiting} page{'s' if waiting > 1 else ''} "
        f"{'are' if waiting > 1 else 'is'} waiting. The studio continues when they start."
    )
    expect(page.locator(".card--complete")).to_have_count(12 - waiting)

    qcluster(**env)
    expect(line).to_have_count(0, timeout=30_000)
    expect(page.locator(".card--complete")).to_have_count(12, timeout=30_000)
    expect(page.locator(".run-state")).to_contain_text("Complete")


def seed_history(project) -> None:
    """An hour of calls behind the studio, as the operations page would find them."""
    run = Run.objects.create(project=project, state=Run.State.FINISHED)
    pages = list(project.pages.order_by("number"))
    jobs = Illustration.objects.bulk_create(
        Illustration(page=page, run=run, status="failed", provider="openai", model="gpt-image-1")
        for page in pages[:20]
    )
    now = db_now()
    rng = random.Random(20)
    outcomes = ["success"] * 30 + ["transient"] * 4 + ["rate_limited"] * 3 + ["rejected", "lost"]
    rows, number = [], {}
    for minute in range(0, 60):
        for _ in range(rng.randint(0, 5) if minute > 12 else rng.randint(3, 9)):
            job = rng.choice(jobs)
            number[job.pk] = number.get(job.pk, 0) + 1
            rows.append(
                GenerationAttempt(
                    illustration=job,
                    number=number[job.pk],
                    started_at=now - timedelta(minutes=minute, seconds=rng.randint(0, 59)),
                    outcome=rng.choice(outcomes),
                    duration_ms=int(rng.lognormvariate(9.6, 0.35)),
                )
            )
    GenerationAttempt.objects.bulk_create(rows)
    SpendEntry.objects.bulk_create(
        SpendEntry(
            attempt_id=row.pk,
            account="openai|https://api.openai.com/v1|3f2a9c",
            provider="openai",
            model="gpt-image-1",
            kind="illustration",
            day=now.date(),
            amount=Decimal("0.042"),
            basis="price",
        )
        for row in rows
        if row.outcome == "success"
    )
    ProviderAccount.objects.create(
        key="openai|https://api.openai.com/v1|3f2a9c",
        provider="openai",
        endpoint="https://api.openai.com/v1",
    )
    ProviderAccount.objects.create(
        key="replicate|https://api.replicate.com/v1|77b1e0",
        provider="replicate",
        endpoint="https://api.replicate.com/v1",
        state="halted",
        reason="out_of_credits",
        message="The clip service says the account is out of credits (HTTP 402).",
    )


def test_an_operator_reads_the_operations_page_from_the_admin(
    page, web_server, qcluster, make_project, django_user_model
):
    django_user_model.objects.create_superuser("operator", "op@example.com", "op-password")
    seed_history(make_project(pages=24, title="The Tale of Peter Rabbit"))
    tasks.sweep()
    waiting = make_project(pages=12, title="The Fox Book")
    qcluster(STUDIO_WORKERS=2)
    server = web_server()
    services.generate_missing(project=waiting)
    services.pause(project=waiting)  # twelve pages waiting in the queue

    sign_in(page, server, username="operator", password="op-password", next_url="/admin/")
    page.get_by_role("link", name="Operations", exact=True).click()
    expect(page.get_by_role("heading", name="Operations")).to_be_visible()
    expect(page.locator(".workers-summary")).to_have_text("1 cluster alive")
    expect(page.locator(".latency-row")).to_have_count(1)
    expect(page.locator(".queue-row")).to_contain_text("12")
    expect(page.locator("#connection")).to_have_text("● Live")  # it refreshes itself
    assert page.locator(".chart__bar").count() > 12
    screenshot(page, "operations")
    # The docs' picture of it (docs/operations.png is a copy).
    page.screenshot(path=str(ARTIFACTS / "operations-full.png"), full_page=True)

    page.get_by_role("link", name="24h").click()
    expect(page.locator("#calls-title")).to_contain_text("last 24 hours")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator(".message")).to_contain_text("Resumed replicate at")
    expect(page.get_by_role("button", name="Resume")).to_have_count(0)
