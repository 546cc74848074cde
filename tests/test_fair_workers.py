"""Fair turns with real workers: a small book queued after a big one is not stuck behind
it, two owners with equal backlogs get equal shares, and on PostgreSQL many clusters
claim with SKIP LOCKED and never call twice."""

import threading

import pytest
from django.db import connection, transaction
from django.db.models import Max, Sum

from generation import engine, runs, services
from generation.kinds import KINDS
from generation.models import GenerationAttempt, Illustration, Run
from generation.selectors import project_progress
from studio.models import Project
from tests.conftest import openai_env, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_small_book_queued_after_a_big_one_finishes_before_a_quarter_of_it(
    make_project, editor, other_editor, qcluster, fake_openai
):
    big = make_project(pages=120, owner=editor, title="Big")
    small = make_project(pages=8, owner=other_editor, title="Small")
    fake_openai.latency = 0.2
    qcluster(**openai_env(fake_openai, STUDIO_WORKERS=4))

    services.generate_missing(project=big)
    # The big book is under way (its 120 tasks are ahead in the broker) when the small one
    # is queued.
    wait_until(lambda: GenerationAttempt.objects.count() >= 4, timeout=60)
    services.generate_missing(project=small)
    wait_until(lambda: project_progress(small).complete, timeout=120)

    small_done = Illustration.objects.filter(page__project=small).aggregate(
        last=Max("finished_at")
    )["last"]
    big_done_by_then = Illustration.objects.filter(
        page__project=big, status="complete", finished_at__lte=small_done
    ).count()
    assert big_done_by_then < 120 // 4
    services.stop(project=big)


def test_two_owners_with_equal_backlogs_get_the_same_share_of_calls(
    make_project, editor, other_editor, qcluster, fake_openai
):
    first = make_project(pages=150, owner=editor, title="First")
    second = make_project(pages=150, owner=other_editor, title="Second")
    fake_openai.latency = 0.1
    # Both queued before the workers start: the first owner's 150 tasks are all ahead.
    services.generate_missing(project=first)
    services.generate_missing(project=second)
    qcluster(**openai_env(fake_openai, STUDIO_WORKERS=4))

    wait_until(lambda: GenerationAttempt.objects.count() >= 200, timeout=120)
    for project in (first, second):
        services.stop(project=project)
    earliest = GenerationAttempt.objects.order_by("started_at", "pk")[:200]
    counts = {"First": 0, "Second": 0}
    for attempt in earliest.select_related("illustration__page__project"):
        counts[attempt.illustration.page.project.title] += 1
    assert sum(counts.values()) == 200
    assert abs(counts["First"] - counts["Second"]) <= 0.1 * max(counts.values()), counts


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="SKIP LOCKED claims are PostgreSQL's; set DATABASE_URL=postgres://… to run this",
)
def test_three_clusters_claim_with_skip_locked_and_never_call_twice(
    make_project, editor, other_editor, django_user_model, qcluster, fake_openai
):
    third = django_user_model.objects.create_user(username="dora", password="dora-password")
    books = [
        # A style of its own per book, so every page's prompt is unique.
        make_project(pages=32, owner=owner, title=f"Book {n}", style_guide=f"Style {n}.")
        for n, owner in enumerate((editor, other_editor, third, editor))
    ]
    fake_openai.latency = 0.05
    env = openai_env(fake_openai, STUDIO_WORKERS=4)
    for _ in range(3):
        qcluster(**env)
    for book in books:
        services.generate_missing(project=book)
    wait_until(lambda: all(project_progress(book).complete for book in books), timeout=180)

    assert fake_openai.successes == 128
    assert set(fake_openai.prompts().values()) == {1}  # no duplicate provider call
    assert GenerationAttempt.objects.count() == 128
    assert Illustration.objects.filter(status="complete").count() == 128
    totals = Run.objects.aggregate(claims=Sum("claims"), conflicts=Sum("claim_conflicts"))
    assert totals["claims"] == 128
    # SKIP LOCKED hands concurrent claims different rows: a lost race is rare, not the rule.
    assert totals["conflicts"] < 128


POSTGRESQL_ONLY = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="row locks and their order are PostgreSQL's; set DATABASE_URL=postgres://… to run this",
)


def someone_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cursor.fetchone()[0] >= 1


def race_a_project_lock(project, *, then, meanwhile) -> dict[str, object]:
    """Lock the project's row in one transaction (as every writer that moves its change
    counter does first), start `meanwhile` on another connection, and once it waits for a
    lock, go on with `then` in the first transaction. Return what each returned under
    "then" and "meanwhile", or the error it raised (a deadlock lands in one of them)."""
    holds_project, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def run(name, work):
        try:
            results[name] = work()
        except Exception as error:
            results[name] = error
        finally:
            connection.close()

    def holder():
        with transaction.atomic():
            Project.objects.select_for_update().filter(pk=project.pk).exists()
            holds_project.set()
            release.wait(10)
            return then()

    first = threading.Thread(target=run, args=("then", holder))
    first.start()
    assert holds_project.wait(10)
    second = threading.Thread(target=run, args=("meanwhile", meanwhile))
    second.start()
    wait_until(someone_waits_for_a_lock, timeout=10)
    release.set()
    first.join(15)
    second.join(15)
    return results


@POSTGRESQL_ONLY
def test_a_claim_meeting_a_stop_waits_for_the_project_and_never_deadlocks(make_project, editor):
    """A stop locks the project's row, then cancels its queued jobs; a claim at that moment
    must wait for the project's row before locking a job (it moves the project's change
    counter), or the two wait for each other and PostgreSQL aborts one."""
    project = make_project(pages=3, owner=editor)
    run = services.generate_missing(project=project).run
    results = race_a_project_lock(
        project,
        then=lambda: Illustration.objects.filter(run=run).cancel_queued(),
        meanwhile=lambda: engine.JobWorker(KINDS["illustration"])._claim_in(run.pk),
    )
    assert results == {"then": 3, "meanwhile": False}  # canceled 3, claimed none


@POSTGRESQL_ONLY
def test_a_worker_settling_a_run_while_the_editor_queues_work_waits_and_never_deadlocks(
    make_project, editor
):
    """Queuing work locks the project's row, then its open run; a worker closing that run
    at that moment must wait for the project's row before it locks the run's (closing it
    moves the project's change counter), or the two wait for each other and PostgreSQL
    aborts one."""
    project = make_project(pages=2, owner=editor)
    run = services.generate_missing(project=project).run
    Illustration.objects.filter(run=run).update(status="complete")  # nothing left: it ends
    results = race_a_project_lock(
        project,
        then=lambda: Run.objects.select_for_update().filter(pk=run.pk).exists(),
        meanwhile=lambda: runs.settle_run(run.pk),
    )
    assert results == {"then": True, "meanwhile": None}  # no error on either side
    run.refresh_from_db()
    assert run.state == Run.State.FINISHED
