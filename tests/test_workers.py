"""End to end with real `qcluster` processes on a file database."""

import pytest

from generation import services
from generation.models import Illustration, Run
from generation.selectors import project_progress
from tests.conftest import wait_until


@pytest.mark.django_db(transaction=True)
def test_a_real_cluster_illustrates_a_24_page_book(make_project, qcluster):
    project = make_project(pages=24)
    qcluster(STUDIO_WORKERS=4)

    queued = services.generate_missing(project=project)
    assert queued.count == 24

    wait_until(
        lambda: project_progress(project).complete,
        timeout=90,
        message="the cluster did not illustrate every page",
    )
    completed = Illustration.objects.filter(page__project=project, status="complete")
    assert completed.count() == 24
    assert len({job.page_id for job in completed}) == 24
    assert all(job.attempts.count() == 1 for job in completed)
    wait_until(lambda: Run.objects.get(pk=queued.run.pk).state == Run.State.FINISHED, timeout=10)
