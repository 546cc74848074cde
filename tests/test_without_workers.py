"""Where editors look when the workers are down: the header says so, a page past its
lease says it waits for its worker, and Stop settles by itself."""

import os
import signal
from datetime import timedelta

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from generation import services
from generation.clock import db_now
from generation.models import GenerationAttempt, Illustration, Run, SpendEntry
from tests.conftest import openai_env, wait_until

HTMX = {"HX-Request": "true"}
NO_WORKERS = "No workers are running, so 3 pages are waiting. The studio continues when they start."


def detail(client, project) -> str:
    return client.get(reverse("project-detail", args=[project.pk])).content.decode()


@pytest.mark.django_db
def test_the_header_says_no_workers_are_running_while_work_waits(client, editor, make_project):
    project = make_project(pages=3)
    client.force_login(editor)
    assert "No workers are running" not in detail(client, project)  # nothing waits yet

    services.generate_missing(project=project)
    html = detail(client, project)
    assert html.count(NO_WORKERS) == 1
    assert "python manage.py qcluster" not in html  # the command is for staff

    editor.is_staff = True
    editor.save()
    assert "Start them with <code>python manage.py qcluster</code>" in detail(client, project)

    services.pause(project=project)  # paused work waits for Resume, not for workers
    assert "No workers are running" not in detail(client, project)


@pytest.mark.django_db
def test_a_page_past_its_lease_waits_for_its_worker(client, editor, make_project):
    project = make_project(pages=2)
    run = services.generate_missing(project=project).run
    job = Illustration.objects.filter(run=run).order_by("page__number").first()
    lapsed = db_now() - timedelta(seconds=30)
    Illustration.objects.filter(pk=job.pk).update(
        status="generating", claimed_by="gone:1:x", lease_expires_at=lapsed
    )
    client.force_login(editor)

    html = detail(client, project)
    heard = timezone.localtime(lapsed - timedelta(seconds=settings.STUDIO_LEASE_SECONDS))
    expected = f"Waiting for the worker (last heard {heard:%H:%M:%S})"
    assert html.count(f'title="{expected}"') == 1
    assert "Generating (attempt" not in html
    # The header counts it apart, not on its way with the queued page.
    assert "1 waiting for the worker (last heard" in html
    assert "1 picture on its way" in html

    Illustration.objects.filter(pk=job.pk).update(lease_expires_at=db_now() + timedelta(minutes=2))
    html = detail(client, project)
    assert "Waiting for the worker" not in html
    assert html.count('title="Generating (attempt 1 of 3)"') == 1


@pytest.mark.django_db
def test_stop_with_only_queued_work_and_no_workers_is_stopped_at_once(client, editor, make_project):
    project = make_project(pages=3)
    services.generate_missing(project=project)
    client.force_login(editor)
    response = client.post(reverse("project-stop", args=[project.pk]), headers=HTMX)
    assert response.status_code == 200
    assert Run.objects.get().state == Run.State.STOPPED
    assert Illustration.objects.filter(status="canceled").count() == 3


@pytest.mark.django_db(transaction=True)
def test_stop_settles_when_the_only_cluster_was_killed_mid_call(
    client, editor, make_project, qcluster, fake_openai
):
    project = make_project(pages=3)
    env = openai_env(
        fake_openai, STUDIO_WORKERS=1, STUDIO_LEASE_SECONDS=2, STUDIO_PROVIDER_TIMEOUT=1
    )
    cluster = qcluster(**env)
    fake_openai.hold()
    run = services.generate_missing(project=project).run
    wait_until(lambda: fake_openai.in_flight == 1, timeout=30)
    os.killpg(cluster.pid, signal.SIGKILL)  # no worker is left to finish or give back
    cluster.wait(timeout=10)
    fake_openai.release()
    wait_until(lambda: Illustration.objects.expired().exists(), timeout=10)

    client.force_login(editor)
    response = client.post(reverse("project-stop", args=[project.pk]), headers=HTMX)

    assert response.status_code == 200
    assert "Stopped. Completed illustrations are kept." in response["HX-Trigger"]
    run.refresh_from_db()
    assert run.state == Run.State.STOPPED
    assert Illustration.objects.filter(run=run, status="canceled").count() == 3
    lost = GenerationAttempt.objects.get()
    assert lost.outcome == "lost"  # the call the dead worker had in flight
    assert SpendEntry.objects.filter(attempt_id=lost.pk, confirmed=False).count() == 1
    assert "Run stopped" in detail(client, project)


@pytest.mark.django_db
def test_stop_is_offered_again_while_stopping_without_workers(client, editor, make_project):
    project = make_project(pages=2)
    run = services.generate_missing(project=project).run
    job = Illustration.objects.filter(run=run).order_by("pk").first()
    Illustration.objects.filter(pk=job.pk).update(
        status="generating", claimed_by="gone:1:x", lease_expires_at=db_now() + timedelta(seconds=1)
    )
    client.force_login(editor)
    services.stop(project=project)  # its lease has not run out yet: stopping
    assert Run.objects.get().state == Run.State.STOPPING
    html = detail(client, project)
    assert "No workers are running, so 1 page is waiting." in html
    assert html.count(">Stop</button>") == 1

    Illustration.objects.filter(pk=job.pk).update(lease_expires_at=db_now() - timedelta(seconds=1))
    client.post(reverse("project-stop", args=[project.pk]), headers=HTMX)
    assert Run.objects.get().state == Run.State.STOPPED
    assert ">Stop</button>" not in detail(client, project)
