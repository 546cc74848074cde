"""Exports that never lie and take turns (issue 30, items 7 and 12): a progress write that
meets a locked database does not leave an export "running" for ever, an export whose worker
is gone reads as failed with Retry, and each editor's exports take turns under a cap so one
editor's pile never delays another's."""

from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.urls import reverse
from django.utils import timezone

from studio.models import Export
from studio.tasks import claim_export, run_export, start_waiting_exports

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch):
    monkeypatch.setattr("studio.export.BUSY_PAUSES", (0, 0, 0))


def progress_write(sql: str) -> bool:
    return sql.startswith('UPDATE "studio_export" SET "pages_done"')


@contextmanager
def locked_export_writes(times: int):
    """Make the next `times` progress or failure writes to an export fail as SQLite does
    while another process holds its write lock; yield the list of refused statements."""
    refused = []

    def wrapper(execute, sql, params, many, context):
        failure_write = sql.startswith('UPDATE "studio_export"') and '"error"' in sql
        if (progress_write(sql) or failure_write) and len(refused) < times:
            refused.append(sql)
            raise OperationalError("database is locked")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield refused


@pytest.mark.parametrize("format", ["zip", "pdf"])
def test_an_export_whose_progress_write_meets_a_locked_database_still_finishes(
    make_project, format
):
    project = make_project(pages=30)
    export = Export.objects.create(project=project, format=format)
    # The first progress write meets the lock three times (before: once, and then the
    # failure handler's own write met it too, and the export stayed "running" for ever).
    with locked_export_writes(3) as refused:
        run_export(export.pk)
    export.refresh_from_db()
    assert len(refused) == 3
    assert export.status == Export.Status.COMPLETE, export.error
    assert (export.pages_done, export.pages_total) == (30, 30)


def test_an_export_whose_every_progress_write_is_locked_still_finishes(make_project):
    project = make_project(pages=30)
    export = Export.objects.create(project=project, format="zip")

    def wrapper(execute, sql, params, many, context):
        if progress_write(sql):
            raise OperationalError("database is locked")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        run_export(export.pk)
    export.refresh_from_db()
    assert export.status == Export.Status.COMPLETE  # ticks skipped, never the export


def test_a_running_export_whose_worker_is_gone_shows_failed_with_retry(
    make_project, client, editor, settings
):
    settings.STUDIO_EXPORT_STALE_MINUTES = 10
    project = make_project(pages=3)
    stale = Export.objects.create(project=project, format="pdf", page_size="letter")
    Export.objects.filter(pk=stale.pk).update(
        status=Export.Status.RUNNING, beat_at=timezone.now() - timedelta(minutes=11)
    )
    client.force_login(editor)

    polled = client.get(reverse("project-export", args=[project.pk]), HTTP_HX_REQUEST="true")
    page = polled.content.decode()
    assert "The export stopped: its worker has said nothing for 10 minutes." in page
    assert ">Retry</button>" in page
    assert polled.status_code == 286  # nothing is running any more: the polling stops
    assert "every 2s" not in page

    response = client.post(
        reverse("project-export", args=[project.pk]), {"format": "pdf", "page_size": "letter"}
    )
    assert response.status_code == 302
    retried = Export.objects.exclude(pk=stale.pk).get()
    assert (retried.format, retried.page_size, retried.status) == ("pdf", "letter", "queued")


def test_a_running_export_whose_worker_beats_is_still_running(make_project, client, editor):
    project = make_project(pages=3)
    export = Export.objects.create(project=project, format="zip")
    Export.objects.filter(pk=export.pk).update(status=Export.Status.RUNNING, beat_at=timezone.now())
    client.force_login(editor)
    polled = client.get(reverse("project-export", args=[project.pk]), HTTP_HX_REQUEST="true")
    assert polled.status_code == 200
    assert "Retry" not in polled.content.decode()


# --- turns per editor ---------------------------------------------------------------------


def test_an_editor_runs_at_most_the_cap_and_another_editors_export_starts_at_once(
    make_project, editor, other_editor, settings, client
):
    settings.STUDIO_EXPORTS_PER_EDITOR = 2
    busy = make_project(pages=2)
    mine = [Export.objects.create(project=busy, format="zip") for _ in range(6)]
    assert [claim_export(e.pk, owner_id=editor.pk) for e in mine] == [True, True] + [False] * 4

    theirs = Export.objects.create(project=make_project(pages=2, owner=other_editor), format="zip")
    assert claim_export(theirs.pk, owner_id=other_editor.pk)  # not behind the six

    client.force_login(editor)
    page = client.get(reverse("project-export", args=[busy.pk])).content.decode()
    assert page.count("Waiting its turn: You have 2 exports running (at most 2 at once)") == 4
    response = client.post(
        reverse("project-export", args=[busy.pk]), {"format": "zip", "page_size": "a4"}, follow=True
    )
    assert (
        "You have 2 exports running (at most 2 at once); this one starts when one finishes."
        in response.content.decode()
    )

    # One finishes: the oldest waiting one takes its turn.
    Export.objects.filter(pk=mine[0].pk).update(status=Export.Status.COMPLETE)
    assert start_waiting_exports(owner_id=editor.pk) == 1
    assert claim_export(mine[2].pk, owner_id=editor.pk)
    assert not claim_export(mine[3].pk, owner_id=editor.pk)


def test_a_waiting_export_is_built_when_its_turn_comes(make_project, editor, settings):
    settings.STUDIO_EXPORTS_PER_EDITOR = 1
    project = make_project(pages=2)
    first, second = (Export.objects.create(project=project, format="zip") for _ in range(2))
    assert claim_export(first.pk, owner_id=editor.pk)
    run_export(second.pk)  # its task came while the first ran: it waits
    second.refresh_from_db()
    assert second.status == Export.Status.QUEUED

    Export.objects.filter(pk=first.pk).update(status=Export.Status.COMPLETE)
    run_export(second.pk)  # delivered again by start_waiting_exports
    second.refresh_from_db()
    assert second.status == Export.Status.COMPLETE


def test_a_stale_export_does_not_count_toward_the_cap(make_project, editor, settings):
    settings.STUDIO_EXPORTS_PER_EDITOR = 1
    project = make_project(pages=2)
    gone, waiting = (Export.objects.create(project=project, format="zip") for _ in range(2))
    Export.objects.filter(pk=gone.pk).update(
        status=Export.Status.RUNNING, beat_at=timezone.now() - timedelta(hours=1)
    )
    assert claim_export(waiting.pk, owner_id=editor.pk)
