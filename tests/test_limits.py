"""Spend and speed control: costs, estimates, budgets, shared limits, cool-downs."""

import json
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from generation import services
from generation.models import (
    GenerationAttempt,
    Illustration,
    ProviderAccount,
    Run,
    SpendEntry,
)
from generation.selectors import spend
from tests.conftest import openai_env, wait_until

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def per_image_price(settings):
    """These tests count in a configured price per image, which wins over the usage the
    service reports (see test_reported_usage_is_priced_at_token_prices)."""
    settings.STUDIO_PRICES = {"openai:gpt-image-1": "0.042"}


def test_each_successful_call_costs_the_configured_price(
    make_project, openai_settings, fake_openai, drain
):
    project = make_project(pages=24)
    fake_openai.script.append("503")  # one failed call: it costs nothing
    run = services.generate_missing(project=project).run
    drain(run.pk)
    costs = list(GenerationAttempt.objects.order_by("pk").values_list("outcome", "cost"))
    assert costs[0] == ("transient", Decimal("0"))
    assert {cost for outcome, cost in costs[1:]} == {Decimal("0.042")}
    totals = spend(project, run)
    assert (totals.project, totals.run) == (Decimal("1.008"), Decimal("1.008"))


def test_reported_usage_is_priced_at_token_prices_and_the_ledger_says_so(
    settings, make_project, openai_settings, drain
):
    settings.STUDIO_PRICES = {}
    project = make_project(pages=2)
    drain(services.generate_missing(project=project).run.pk)
    # The fake reports gpt-image-1's usage for one 1024² picture: 50 text tokens in at
    # $5/M and 1,056 image tokens out at $40/M.
    entries = SpendEntry.objects.filter(project_id=project.pk)
    assert [(e.amount, e.basis, e.confirmed) for e in entries] == [
        (Decimal("0.0425"), "usage", True),
        (Decimal("0.0425"), "usage", True),
    ]
    assert spend(project, None).project == Decimal("0.085")


def test_configured_prices_win_over_the_built_in_list(make_project, openai_settings, drain):
    openai_settings.STUDIO_PRICES = {"openai:gpt-image-1": 0.05}
    project = make_project(pages=4)
    drain(services.generate_missing(project=project).run.pk)
    assert spend(project, None).project == Decimal("0.20")


def test_totals_per_run_and_project_everywhere(
    client, editor, make_project, openai_settings, fake_openai, drain
):
    project = make_project(pages=4)
    first = services.generate_missing(project=project).run
    drain(first.pk, limit=2)
    services.stop(project=project)
    second = services.generate_missing(project=project).run
    drain(second.pk)
    assert spend(project, second).run == Decimal("0.084")

    client.force_login(editor)
    html = client.get(project.get_absolute_url()).content.decode()
    assert "Spent $0.17 · this run $0.084" in html
    out = StringIO()
    call_command("generation_status", "--json", stdout=out)
    [status] = json.loads(out.getvalue())["projects"]
    assert status["cost"] == {"project": "0.1680", "run": "0.0840"}


def test_the_estimate_states_its_rule(client, editor, make_project, openai_settings):
    client.force_login(editor)
    html = client.get(make_project(pages=24).get_absolute_url()).content.decode()
    assert "24 illustrations ≈ $1.01 at current settings (one attempt each at $0.042)." in html


def test_the_budget_halts_before_an_attempt_would_exceed_it(
    client, editor, make_project, openai_settings, fake_openai, drain
):
    project = make_project(pages=6)
    project.budget = Decimal("0.10")
    project.save()
    run = services.generate_missing(project=project).run
    drain(run.pk)
    run.refresh_from_db()
    assert (run.state, run.halt_reason) == ("halted", "budget")
    assert fake_openai.call_count == 2  # 0.084 spent; a third would make 0.126
    assert spend(project, run).project == Decimal("0.084")
    assert run.message == (
        "The next illustration would take this project past its budget of $0.10 "
        "($0.084 spent, $0.042 each). Raise the budget in Settings, then press Resume."
    )
    client.force_login(editor)
    assert "past its budget of $0.10" in client.get(project.get_absolute_url()).content.decode()

    client.post(
        reverse("project-settings", args=[project.pk]),
        {"title": project.title, "style_guide": "", "budget": "1.00"},
    )
    services.resume(project=project)
    drain(run.pk)
    assert Illustration.objects.filter(status="complete").count() == 6


def test_at_30_requests_a_minute_ten_calls_take_at_least_18_seconds(
    make_project, openai_settings, fake_openai, drain, clock
):
    openai_settings.STUDIO_PROVIDER_REQUESTS_PER_MINUTE = 30
    project = make_project(pages=10)
    run = services.generate_missing(project=project).run
    started = clock.now()
    drain(run.pk)
    assert fake_openai.call_count == 10
    assert (clock.now() - started).total_seconds() >= 18  # nine gaps of two seconds


def test_a_project_can_lower_the_rate(make_project, openai_settings, fake_openai, drain, clock):
    project = make_project(pages=4)
    project.requests_per_minute = 6
    project.save()
    run = services.generate_missing(project=project).run
    started = clock.now()
    drain(run.pk)
    assert (clock.now() - started).total_seconds() >= 30  # three gaps of ten seconds


def test_a_retry_after_shows_the_provider_cooling_down(
    client, editor, make_project, openai_settings, fake_openai, clock
):
    from django.utils import timezone

    from generation import engine

    project = make_project(pages=2)
    fake_openai.script.append("429_rate_long")
    run = services.generate_missing(project=project).run
    # The 429 arrives (Retry-After: 600): the whole account cools down for ten minutes.
    engine.run_next_job(run.pk, sleep=lambda seconds: None, clock=clock)
    account = ProviderAccount.objects.get()
    assert account.cooldown_until > timezone.now() + timedelta(seconds=590)
    client.force_login(editor)
    html = client.get(project.get_absolute_url()).content.decode()
    assert "cooling down until" in html and "Rate limit reached." in html


@pytest.mark.django_db(transaction=True)
def test_a_concurrency_cap_of_2_holds_across_all_workers(make_project, qcluster, fake_openai):
    project = make_project(pages=12)
    fake_openai.latency = 0.3
    env = openai_env(fake_openai, STUDIO_WORKERS=4, STUDIO_PROVIDER_MAX_CONCURRENT=2)
    qcluster(**env)
    qcluster(**env)
    services.generate_missing(project=project)
    wait_until(lambda: Illustration.objects.filter(status="complete").count() == 12, timeout=60)
    assert fake_openai.max_in_flight == 2


@pytest.mark.django_db(transaction=True)
def test_a_project_cap_of_1_makes_its_calls_one_at_a_time(make_project, qcluster, fake_openai):
    project = make_project(pages=6)
    project.max_concurrent = 1
    project.save()
    fake_openai.latency = 0.2
    qcluster(**openai_env(fake_openai, STUDIO_WORKERS=4))
    services.generate_missing(project=project)
    wait_until(lambda: Illustration.objects.filter(status="complete").count() == 6, timeout=60)
    assert fake_openai.max_in_flight == 1


@pytest.mark.django_db(transaction=True)
def test_after_a_retry_after_no_worker_calls_until_it_passes(make_project, qcluster, fake_openai):
    project = make_project(pages=12)
    fake_openai.latency = 0.2
    fake_openai.script.append("429_rate")  # Retry-After: 3
    qcluster(**openai_env(fake_openai, STUDIO_WORKERS=4))
    services.generate_missing(project=project)
    wait_until(lambda: Illustration.objects.filter(status="complete").count() == 12, timeout=60)
    [limited] = [call for call in fake_openai.calls if call.get("status") == 429]
    # The worker that got the 429 needs a moment to record the cool-down for everyone; a
    # call that had its slot before then may still go out in that moment (at most one for
    # each of the 3 other workers; on a busy machine the moment lasts a few hundred ms).
    answered = limited["answered"]
    after = [call["started"] for call in fake_openai.calls if call["started"] > answered]
    early = [started for started in after if started < answered + 3 - 0.05]
    assert len(early) <= 3
    assert all(started < answered + 1 for started in early)
    assert len(after) > len(early)  # the work went on, but only once the 3 s had passed
    # The worker that drew the last page closes the run right after it.
    wait_until(lambda: Run.objects.get().state == Run.State.FINISHED, timeout=10)
