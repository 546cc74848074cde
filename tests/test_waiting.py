"""Waiting holds no worker: a job that must wait longer than a worker should sleep (a rate
limit's next token, a cool-down, a picture still being made) goes back to the queue with its
next try and what it waits for, and the worker takes other editors' pages meanwhile."""

import pytest

from generation import services
from generation.models import Illustration

Status = Illustration.Status


@pytest.mark.django_db
def test_a_worker_never_sleeps_out_one_projects_rate_limit(
    client, editor, make_project, openai_settings, fake_openai, drain, clock
):
    slow = make_project(pages=3, title="Slow book")
    slow.requests_per_minute = 1
    slow.save()
    quick = make_project(pages=3, title="Quick book")
    slow_run = services.generate_missing(project=slow).run
    services.generate_missing(project=quick)
    started = clock.now()

    drain(slow_run.pk)

    assert (clock.now() - started).total_seconds() < 10  # no worker sat out the minute
    assert Illustration.objects.filter(page__project=quick, status=Status.COMPLETE).count() == 3
    waiting = Illustration.objects.filter(page__project=slow, status=Status.QUEUED)
    assert waiting.count() == 2
    assert {job.waiting_for for job in waiting} == {"1 a minute for this project"}
    assert all(job.next_attempt_at is not None for job in waiting)
    client.force_login(editor)
    html = client.get(slow.get_absolute_url()).content.decode()
    assert "1 a minute for this project; next at" in html
