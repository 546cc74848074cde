import pytest

from generation import services
from generation.models import Illustration, Run
from generation.selectors import project_progress

pytestmark = pytest.mark.django_db

Status = Illustration.Status


def test_it_queues_exactly_the_pages_without_a_complete_illustration(make_project):
    project = make_project(pages=6)
    pages = list(project.pages.all())
    Illustration.objects.create(page=pages[0], status=Status.COMPLETE)
    Illustration.objects.create(page=pages[1], status=Status.FAILED)  # Retry failed's
    Illustration.objects.create(page=pages[2], status=Status.CANCELED)

    queued = services.generate_missing(project=project)

    assert queued.count == 4
    queued_pages = set(
        Illustration.objects.filter(status=Status.QUEUED).values_list("page__number", flat=True)
    )
    assert queued_pages == {3, 4, 5, 6}
    assert queued.run.state == Run.State.RUNNING


def test_clicking_twice_queues_nothing_more(make_project):
    project = make_project(pages=4)
    first = services.generate_missing(project=project)
    second = services.generate_missing(project=project)
    assert (first.count, second.count) == (4, 0)
    assert second.run == first.run
    assert Illustration.objects.count() == 4


def test_a_complete_project_queues_nothing_and_starts_no_run(make_project):
    project = make_project(pages=2)
    for page in project.pages.all():
        Illustration.objects.create(page=page, status=Status.COMPLETE)
    assert services.generate_missing(project=project).count == 0
    assert Run.objects.count() == 0


def test_it_hands_the_broker_one_task_per_queued_page(
    make_project, broker, django_capture_on_commit_callbacks
):
    project = make_project(pages=7)
    with django_capture_on_commit_callbacks(execute=True):
        services.generate_missing(project=project)
    assert broker.queue_size() == 7
    with django_capture_on_commit_callbacks(execute=True):
        services.generate_missing(project=project)  # a double click
    assert broker.queue_size() == 7


def test_the_workers_illustrate_every_page_and_only_then_is_the_project_complete(
    make_project, drain
):
    project = make_project(pages=24)
    run = services.generate_missing(project=project).run

    assert project_progress(project).complete is False
    assert drain(run.pk, limit=23) == 23
    assert project_progress(project).complete is False  # one page still missing
    run.refresh_from_db()
    assert run.state == Run.State.RUNNING

    assert drain(run.pk) == 1
    progress = project_progress(project)
    assert (progress.illustrated, progress.missing, progress.complete) == (24, 0, True)
    run.refresh_from_db()
    assert run.state == Run.State.FINISHED
    images = Illustration.objects.filter(status=Status.COMPLETE)
    assert len({i.image.read() for i in images}) == 24  # distinct pictures
    assert all(i.prompt_sent and i.provider == "embedded" for i in images)


def test_each_call_writes_one_attempt_row(make_project, drain):
    project = make_project(pages=3)
    run = services.generate_missing(project=project).run
    drain(run.pk)
    for job in Illustration.objects.all():
        attempts = list(job.attempts.all())
        assert [(a.number, a.outcome) for a in attempts] == [(1, "success")]
        assert attempts[0].finished_at >= attempts[0].started_at
