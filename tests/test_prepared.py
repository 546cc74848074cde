"""Writes compiled once (generation.prepared): run again with other values, they change
exactly what the ORM path changes, move the project's counter only when their own UPDATE
changed a row, and anything the module cannot replay runs through the ORM."""

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from generation import prepared, services
from generation.models import Illustration
from studio.models import Page, Project

pytestmark = pytest.mark.django_db

TABLE = Illustration._meta.db_table


@pytest.fixture(autouse=True)
def fresh_templates():
    prepared.clear()
    yield
    prepared.clear()


def release(*, pk: int, project_id: int, worker_id: str, note: str) -> int:
    """A visible compare-and-set on one job (moves its project's counter when it wins)."""
    return (
        Illustration.objects.filter(pk=pk, claimed_by=worker_id)
        .of_project(project_id)
        .update(claimed_by="", waiting_for=note)
    )


def version(project) -> int:
    return Project.objects.values_list("version", flat=True).get(pk=project.pk)


@pytest.fixture
def jobs(make_project):
    project = make_project(pages=3)
    services.generate_missing(project=project)
    rows = list(Illustration.objects.filter(page__project=project).order_by("pk"))
    for number, job in enumerate(rows):
        Illustration.objects.filter(pk=job.pk).update(claimed_by=f"worker-{number}")
    return project, rows


def test_a_replayed_write_changes_what_the_orm_would_and_moves_the_counter_once(jobs):
    project, (first, second, third) = jobs

    def write(job, worker_id, note):
        return prepared.write(
            "release",
            release,
            table=TABLE,
            pk=job.pk,
            project_id=project.pk,
            worker_id=worker_id,
            note=note,
        )

    assert write(first, "worker-0", "one") == 1  # compiled (captured, nothing run), then run
    before = version(project)
    with CaptureQueriesContext(connection) as replay:
        assert write(second, "worker-1", "two") == 1  # replayed with new values
    assert version(project) == before + 1
    rows = dict(Illustration.objects.values_list("pk", "waiting_for"))
    assert (rows[first.pk], rows[second.pk], rows[third.pk]) == ("one", "two", "")
    assert all(values["sql"].startswith("UPDATE") for values in replay.captured_queries)

    # A compare-and-set that loses changes nothing, and the counter does not move.
    before = version(project)
    assert write(third, "somebody-else", "three") == 0
    assert version(project) == before
    assert Illustration.objects.get(pk=third.pk).waiting_for == ""


def test_values_of_another_kind_make_another_statement(jobs):
    project, (first, second, _) = jobs

    def mark(*, pk, note, seconds):
        return Illustration.objects.filter(pk=pk).update(waiting_for=note, next_attempt_at=seconds)

    prepared.write("mark", mark, table=TABLE, pk=first.pk, note="a", seconds=None)
    from django.utils import timezone

    moment = timezone.now()
    prepared.write("mark", mark, table=TABLE, pk=second.pk, note="b", seconds=moment)
    assert Illustration.objects.get(pk=first.pk).next_attempt_at is None
    assert Illustration.objects.get(pk=second.pk).next_attempt_at == moment


def test_a_write_that_cannot_be_replayed_runs_through_the_orm(jobs):
    project, (first, second, _) = jobs

    def reads_then_writes(*, pk, note):
        # A read before the write, and a value the action changes before the ORM sees it:
        # neither can be replayed from markers.
        page = Page.objects.get(illustrations=pk)
        return Illustration.objects.filter(pk=pk).update(
            waiting_for=f"{note.upper()} {page.number}", attempts_made=F("attempts_made")
        )

    assert prepared.write("reads", reads_then_writes, table=TABLE, pk=first.pk, note="x") == 1
    assert prepared.write("reads", reads_then_writes, table=TABLE, pk=second.pk, note="y") == 1
    notes = dict(Illustration.objects.values_list("pk", "waiting_for"))
    assert notes[first.pk] == f"X {first.page.number}"
    assert notes[second.pk] == f"Y {second.page.number}"


def test_a_replayed_read_makes_the_instance_the_orm_makes_with_its_joins_and_annotations(jobs):
    from generation.engine import claimed_rows
    from generation.kinds import KINDS

    project, rows = jobs
    kind = KINDS["illustration"]

    def build(*, worker_id):
        return claimed_rows(kind).filter(claimed_by=worker_id)

    def fields(job):
        related = (job.run.pk, job.run.state, job.page.number, job.page.project.title)
        return (job.pk, job.status, job.created_at, *related, job.last_attempt, job.has_picture)

    for number in range(len(rows)):
        expected = build(worker_id=f"worker-{number}").get()
        with CaptureQueriesContext(connection) as queries:
            got = prepared.get("claimed", build, worker_id=f"worker-{number}")
            assert fields(got) == fields(expected)
        assert len(queries) == 1  # the joins read with it: no query per related object
    with pytest.raises(Illustration.DoesNotExist):
        prepared.get("claimed", build, worker_id="nobody")
    Illustration.objects.filter(pk=rows[1].pk).update(claimed_by="worker-0")
    with pytest.raises(Illustration.MultipleObjectsReturned):
        prepared.get("claimed", build, worker_id="worker-0")
