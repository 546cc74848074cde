"""Fair turns: owners take turns, then their projects; "Generate next" still leads within a
project; a run whose account is halted or at a limit waits behind the others."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from generation import engine, fairness, services
from generation.clock import db_now
from generation.kinds import KINDS
from generation.models import (
    Illustration,
    ProviderAccount,
    ProviderGate,
    ProviderSlot,
    Run,
    later,
)
from generation.providers import account_of, get_provider

pytestmark = pytest.mark.django_db


def claims(count: int) -> list[tuple[str, int] | None]:
    """Claim jobs one after another, none finishing; return (project, page) of each."""
    taken = []
    for _ in range(count):
        job = engine.JobWorker(KINDS["illustration"]).claim_next()
        taken.append((job.page.project.title, job.page.number) if job is not None else None)
    return taken


def test_owners_take_turns_then_their_projects(make_project, editor, other_editor):
    for project in (
        make_project(pages=3, owner=editor, title="A1"),
        make_project(pages=3, owner=editor, title="A2"),
        make_project(pages=3, owner=other_editor, title="C"),
    ):
        services.generate_missing(project=project)

    assert claims(10) == [
        ("A1", 1),  # nobody served yet: the oldest run
        ("C", 1),  # charlie has not been served, alice has
        ("A2", 1),  # alice's turn, and her project not served yet
        ("C", 2),
        ("A1", 2),  # alice's turn again: now A1, served longer ago than A2
        ("C", 3),
        ("A2", 2),  # charlie has nothing left: alice's projects alternate
        ("A1", 3),
        ("A2", 3),
        None,  # nothing due anywhere: the task ends without a job
    ]
    runs = Run.objects.order_by("pk")
    assert [run.claims for run in runs] == [3, 3, 3]
    assert [run.claim_conflicts for run in runs] == [0, 0, 0]


def test_a_book_queued_late_is_served_next(make_project, editor, other_editor):
    big = make_project(pages=100, owner=editor, title="Big")
    services.generate_missing(project=big)
    assert claims(5) == [("Big", n) for n in range(1, 6)]

    small = make_project(pages=2, owner=other_editor, title="Small")
    services.generate_missing(project=small)
    assert claims(4) == [("Small", 1), ("Big", 6), ("Small", 2), ("Big", 7)]


def test_generate_next_still_leads_within_a_project(make_project, editor, other_editor):
    book = make_project(pages=4, owner=editor, title="Book")
    other = make_project(pages=4, owner=other_editor, title="Other")
    services.generate_missing(project=book)
    services.generate_missing(project=other)
    services.prioritize(page=book.pages.get(number=3))
    services.prioritize(page=other.pages.get(number=4))

    assert claims(4) == [("Book", 3), ("Other", 4), ("Book", 1), ("Other", 1)]


def test_a_halted_account_or_a_full_project_waits_behind_others_and_a_paused_run_is_skipped(
    make_project, editor, other_editor, django_user_model, openai_settings
):
    third = django_user_model.objects.create_user(username="dora", password="dora-password")
    halted = make_project(pages=1, owner=editor, title="Halted")
    full = make_project(pages=1, owner=third, title="Full")
    paused = make_project(pages=2, owner=third, title="Paused")
    ready = make_project(pages=2, owner=other_editor, title="Ready")
    # Halted draws with OpenAI, whose account is out of credits; the rest use the default.
    openai_settings.STUDIO_IMAGE_PROVIDER = "embedded"
    halted.image_service = "openai"
    halted.save()
    ProviderAccount.objects.create(
        key=account_of(get_provider("openai")), provider="openai", state="halted"
    )
    # Full may make one call at a time and has one in flight.
    full.max_concurrent = 1
    full.save()
    ProviderSlot.objects.create(provider_key="embedded", project=full, expires_at=later(60))
    for project in (halted, full, paused, ready):
        services.generate_missing(project=project)
    services.pause(project=paused)

    assert [
        Run.objects.get(pk=pk).project.title for pk in fairness.next_runs(KINDS["illustration"])
    ] == [
        "Ready",
        "Halted",
        "Full",
    ]
    # Passed over, never dropped: once Ready is done, a worker still takes the others (its
    # call then waits for the slot, or halts the run, as before).
    assert claims(5) == [("Ready", 1), ("Ready", 2), ("Halted", 1), ("Full", 1), None]
    assert Illustration.objects.filter(page__project=paused, status="queued").count() == 2


def test_the_order_puts_blocked_runs_last_then_owners_then_runs():
    turns = [
        fairness.Turn(run_id=1, project_id=1, owner_id=1, turn=5, owner_turn=9),
        fairness.Turn(run_id=2, project_id=2, owner_id=1, turn=9, owner_turn=9),
        fairness.Turn(run_id=3, project_id=3, owner_id=2, turn=7, owner_turn=7),
        fairness.Turn(run_id=4, project_id=4, owner_id=3, turn=0, owner_turn=0, blocked=True),
        fairness.Turn(run_id=5, project_id=5, owner_id=4, turn=0, owner_turn=0),
    ]
    assert [turn.run_id for turn in fairness.order(turns)] == [5, 3, 1, 2, 4]


def test_a_task_may_work_another_runs_job_and_closes_that_run(
    make_project, editor, other_editor, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    first = services.generate_missing(project=make_project(pages=1, owner=editor)).run
    second = services.generate_missing(project=make_project(pages=1, owner=other_editor)).run

    # The second run's task comes first: the first run's job is the one whose turn it is.
    worked = engine.run_next_job(second.pk, sleep=lambda seconds: None)
    assert Illustration.objects.get(pk=worked).run_id == first.pk
    assert Run.objects.get(pk=first.pk).state == Run.State.FINISHED
    assert Run.objects.get(pk=second.pk).state == Run.State.RUNNING

    worked = engine.run_next_job(first.pk, sleep=lambda seconds: None)
    assert Illustration.objects.get(pk=worked).run_id == second.pk
    assert Run.objects.get(pk=second.pk).state == Run.State.FINISHED
    assert engine.run_next_job(first.pk) is None


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="SKIP LOCKED claims are PostgreSQL's; set DATABASE_URL=postgres://… to run this",
)
def test_on_postgresql_a_claim_is_one_update_that_skips_locked_rows(make_project, editor):
    services.generate_missing(project=make_project(pages=2, owner=editor))
    with CaptureQueriesContext(connection) as captured:
        assert engine.JobWorker(KINDS["illustration"]).claim_next() is not None
    claims = [q["sql"] for q in captured if q["sql"].startswith('UPDATE "generation_illustration"')]
    assert len(claims) == 1
    assert "FOR UPDATE OF" in claims[0] and "SKIP LOCKED" in claims[0]


def test_a_project_out_of_calls_this_minute_or_an_account_cooling_down_waits_behind(
    make_project, editor, other_editor, django_user_model, openai_settings
):
    third = django_user_model.objects.create_user(username="dora", password="dora-password")
    rated = make_project(pages=1, owner=editor, title="Rated")
    cooling = make_project(pages=1, owner=third, title="Cooling")
    ready = make_project(pages=1, owner=other_editor, title="Ready")
    openai_settings.STUDIO_IMAGE_PROVIDER = "embedded"
    # Rated may make 1 call a minute and has just made it.
    rated.requests_per_minute = 1
    rated.save()
    ProviderGate.objects.create(key=f"project:{rated.pk}", tokens=0, refilled_at=db_now())
    # Cooling draws with OpenAI, which asked every worker to wait (Retry-After).
    cooling.image_service = "openai"
    cooling.save()
    ProviderAccount.objects.create(
        key=account_of(get_provider("openai")), provider="openai", cooldown_until=later(120)
    )
    for project in (rated, cooling, ready):
        services.generate_missing(project=project)

    order = fairness.next_runs(KINDS["illustration"])
    assert [Run.objects.get(pk=pk).project.title for pk in order] == ["Ready", "Rated", "Cooling"]
