"""Many clusters against one database and broker: 3 real qcluster processes × 4 workers."""

import os
import signal

import pytest

from generation import services
from generation.models import GenerationAttempt, Illustration, Run
from generation.selectors import project_progress
from tests.conftest import openai_env, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_three_clusters_share_the_work_and_never_do_it_twice(make_project, qcluster, fake_openai):
    project = make_project(pages=48)
    fake_openai.latency = 0.3
    env = openai_env(fake_openai, STUDIO_WORKERS=4)
    for _ in range(3):
        qcluster(**env)

    run = services.generate_missing(project=project).run
    wait_until(lambda: project_progress(project).complete, timeout=120)

    assert fake_openai.successes == 48
    assert len(fake_openai.prompts()) == 48
    assert set(fake_openai.prompts().values()) == {1}  # no duplicate provider call
    assert 4 < fake_openai.max_in_flight <= 12  # more than one cluster at work, never more
    jobs = Illustration.objects.filter(page__project=project)
    assert jobs.count() == 48 and jobs.filter(status="complete").count() == 48
    assert GenerationAttempt.objects.filter(illustration__page__project=project).count() == 48
    wait_until(lambda: Run.objects.get(pk=run.pk).state == Run.State.FINISHED, timeout=10)


def test_killing_one_of_three_clusters_loses_no_page(make_project, qcluster, fake_openai):
    project = make_project(pages=48)
    env = openai_env(
        fake_openai, STUDIO_WORKERS=4, STUDIO_LEASE_SECONDS=3, STUDIO_PROVIDER_TIMEOUT=2
    )
    clusters = [qcluster(**env) for _ in range(3)]
    fake_openai.hold()
    services.generate_missing(project=project)
    wait_until(lambda: fake_openai.in_flight == 12, timeout=60)

    os.killpg(clusters[0].pid, signal.SIGKILL)
    clusters[0].wait(timeout=10)
    fake_openai.release()

    # The two live clusters take the dead one's four jobs back by themselves (they sweep
    # every beat), nobody else sweeping.
    lost = GenerationAttempt.objects.filter(outcome="lost")
    wait_until(lambda: lost.count() == 4, timeout=30, interval=0.5)
    wait_until(lambda: project_progress(project).complete, timeout=120)
    complete = Illustration.objects.filter(page__project=project, status="complete")
    assert complete.count() == 48
    assert len({job.page_id for job in complete}) == 48
    assert GenerationAttempt.objects.filter(outcome="lost").count() == 4
    assert fake_openai.successes == 52  # the 4 answers the dead workers never read
