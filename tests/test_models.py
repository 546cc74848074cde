import pytest
from django.db import IntegrityError, transaction

from generation.models import Illustration, Run
from studio.models import Page

pytestmark = pytest.mark.django_db


def test_the_database_refuses_a_second_active_job_for_a_page(make_project):
    page = make_project(pages=1).pages.get()
    Illustration.objects.create(page=page, status=Illustration.Status.GENERATING)
    with pytest.raises(IntegrityError), transaction.atomic():
        Illustration.objects.create(page=page, status=Illustration.Status.QUEUED)


def test_a_page_may_keep_finished_jobs_beside_one_active_job(make_project):
    page = make_project(pages=1).pages.get()
    Illustration.objects.create(page=page, status=Illustration.Status.FAILED)
    Illustration.objects.create(page=page, status=Illustration.Status.CANCELED)
    Illustration.objects.create(page=page, status=Illustration.Status.QUEUED)
    assert page.illustrations.count() == 3


def test_the_database_refuses_two_complete_illustrations_of_a_page_in_one_run(make_project):
    project = make_project(pages=1)
    page = project.pages.get()
    run = Run.objects.create(project=project)
    Illustration.objects.create(page=page, run=run, status=Illustration.Status.COMPLETE)
    with pytest.raises(IntegrityError), transaction.atomic():
        Illustration.objects.create(page=page, run=run, status=Illustration.Status.COMPLETE)


def test_page_numbers_are_unique_within_a_project(make_project):
    project = make_project(pages=2)
    with pytest.raises(IntegrityError), transaction.atomic():
        Page.objects.create(project=project, number=2, text="again")


def test_a_project_has_at_most_one_open_run(make_project):
    project = make_project(pages=1)
    Run.objects.create(project=project, state=Run.State.HALTED)
    Run.objects.create(project=project, state=Run.State.FINISHED)
    with pytest.raises(IntegrityError), transaction.atomic():
        Run.objects.create(project=project, state=Run.State.RUNNING)
