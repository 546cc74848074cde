"""End to end with real `qcluster` processes on a file database."""

import os
import signal

import pytest

from generation import runs, services
from generation.models import GenerationAttempt, Illustration, Run
from generation.selectors import project_progress
from tests.conftest import Sweeper, openai_env, wait_until


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


def _illustrated(project) -> int:
    return project_progress(project).illustrated


def _run(run_id) -> Run:
    return Run.objects.get(pk=run_id)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("reply", ["402", "429_quota"])
def test_real_workers_halt_on_no_credits_within_one_call_each_then_resume(
    make_project, qcluster, fake_openai, reply
):
    project = make_project(pages=24)
    fake_openai.default = reply
    qcluster(**openai_env(fake_openai, STUDIO_WORKERS=4))

    run_id = services.generate_missing(project=project).run.pk
    wait_until(lambda: _run(run_id).state == Run.State.HALTED, timeout=60)
    assert _run(run_id).halt_reason == "out_of_credits"
    # Let the calls that were in flight when it halted come back.
    wait_until(
        lambda: (
            fake_openai.in_flight == 0
            and not Illustration.objects.filter(
                page__project=project, status__in=["generating", "retrying"]
            ).exists()
        ),
        timeout=30,
    )
    assert 1 <= fake_openai.call_count <= 4  # at most one call per worker
    progress = project_progress(project)
    assert (progress.failed, progress.illustrated, progress.complete) == (0, 0, False)

    fake_openai.default = "ok"
    services.resume(project=project)
    wait_until(lambda: project_progress(project).complete, timeout=60)
    assert fake_openai.successes == 24
    assert fake_openai.prompts().most_common(1)[0][1] <= 2  # no page asked for twice more


@pytest.mark.django_db(transaction=True)
def test_real_workers_halt_on_a_bad_key(make_project, qcluster, fake_openai):
    project = make_project(pages=24)
    fake_openai.default = "401"
    qcluster(**openai_env(fake_openai, STUDIO_WORKERS=4))
    run_id = services.generate_missing(project=project).run.pk
    wait_until(lambda: _run(run_id).state == Run.State.HALTED, timeout=60)
    wait_until(lambda: fake_openai.in_flight == 0, timeout=30)
    assert _run(run_id).halt_reason == "auth"
    assert 1 <= fake_openai.call_count <= 4
    assert project_progress(project).failed == 0


@pytest.mark.django_db(transaction=True)
def test_stop_mid_run_lets_calls_in_flight_finish_and_starts_no_other(
    make_project, qcluster, fake_openai
):
    project = make_project(pages=24)
    fake_openai.hold()
    qcluster(**openai_env(fake_openai, STUDIO_WORKERS=4))
    run_id = services.generate_missing(project=project).run.pk
    wait_until(lambda: fake_openai.in_flight == 4, timeout=60)

    services.stop(project=project)
    calls_at_stop = fake_openai.call_count
    fake_openai.release()

    wait_until(lambda: _run(run_id).state == Run.State.STOPPED, timeout=30)
    assert calls_at_stop == 4
    assert fake_openai.call_count == 4
    assert _illustrated(project) == 4
    assert Illustration.objects.filter(page__project=project, status="canceled").count() == 20

    again = services.generate_missing(project=project)
    assert again.count == 20
    wait_until(lambda: project_progress(project).complete, timeout=60)
    assert fake_openai.successes == 24
    assert set(fake_openai.prompts().values()) == {1}  # every page asked for exactly once


@pytest.mark.django_db(transaction=True)
def test_a_cluster_killed_with_sigkill_loses_no_page(make_project, qcluster, fake_openai):
    project = make_project(pages=24)
    fake_openai.hold()
    env = openai_env(
        fake_openai, STUDIO_WORKERS=4, STUDIO_LEASE_SECONDS=3, STUDIO_PROVIDER_TIMEOUT=2
    )
    doomed = qcluster(**env)
    run_id = services.generate_missing(project=project).run.pk
    wait_until(lambda: fake_openai.in_flight == 4, timeout=60)

    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=10)
    fake_openai.release()  # their answers go to dead sockets

    # After the leases expire, the sweep puts the four jobs back in the queue.
    sweeper = Sweeper(4)
    wait_until(sweeper, timeout=30, interval=0.5)
    assert sweeper.requeued == 4
    assert GenerationAttempt.objects.filter(outcome="lost").count() == 4

    qcluster(**env)
    wait_until(lambda: project_progress(project).complete, timeout=60)
    completed = Illustration.objects.filter(page__project=project, status="complete")
    assert completed.count() == 24
    assert len({job.page_id for job in completed}) == 24
    wait_until(lambda: _run(run_id).state == Run.State.FINISHED, timeout=10)
    assert fake_openai.successes == 28  # 24 kept + the 4 answers the dead workers never read


@pytest.mark.django_db(transaction=True)
def test_spare_tasks_across_clusters_claim_nothing_twice(make_project, qcluster, fake_openai):
    """With clusters alive, a book gets a spare task per place a cluster holds ahead
    (queue_limit 1 + the pusher's one), so a busy cluster's held tasks cannot leave
    another cluster's idle workers without work; the spare ones claim nothing."""
    from generation import workers

    env = openai_env(fake_openai, STUDIO_WORKERS="2")
    qcluster(**env)
    qcluster(**env)
    wait_until(lambda: len(workers.alive()) >= 2, timeout=60, message="no two clusters")
    assert runs.spare_tasks(12) == 4
    assert runs.spare_tasks(3) == 3  # never more spare tasks than jobs

    project = make_project(pages=12)
    queued = services.generate_missing(project=project)
    wait_until(lambda: project_progress(project).complete, timeout=90, message="not done")
    completed = Illustration.objects.filter(page__project=project, status="complete")
    assert completed.count() == 12
    assert GenerationAttempt.objects.filter(illustration__page__project=project).count() == 12
    assert max(fake_openai.prompts().values()) == 1
    wait_until(lambda: Run.objects.get(pk=queued.run.pk).state == Run.State.FINISHED, timeout=10)
