"""Files follow their owner: deleting a page or project deletes its stored files once the
deletion commits, and purge_orphan_files removes what no row owns."""

import os
import re
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.urls import reverse

from generation.models import Clip, Illustration
from generation.thumbnails import thumbnail_name
from studio import services
from studio.models import Export, Project
from tests.conftest import stored_names

Status = Illustration.Status


@pytest.fixture
def media(settings, tmp_path):
    """A MEDIA_ROOT of this test's own, so exact listings see no other test's files."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def stored(media: Path) -> list[str]:
    return stored_names(media)


def picture(page, status, *, thumbnail=False) -> str:
    """Store a picture for a new job of the page (as a worker would); return its name."""
    job = Illustration.objects.create(page=page, status=status)
    job.image.save("illustration.png", ContentFile(b"png" * 100))
    if thumbnail:
        default_storage.save(thumbnail_name(job.image.name), ContentFile(b"webp" * 10))
    return job.image.name


def clip(page, status=Status.COMPLETE) -> str:
    job = Clip.objects.create(page=page, status=status)
    job.video.save("clip.mp4", ContentFile(b"mp4" * 1000))
    return job.video.name


def export(project) -> str:
    made = Export.objects.create(project=project, format="zip", status="complete")
    made.file.save("a-book.zip", ContentFile(b"zip" * 2000))
    return made.file.name


@pytest.fixture
def book(media, make_project):
    """Two pages. Page 1: a replaced picture, the current one (both with thumbnails), a
    failed job without one, a replaced clip and the current clip. Page 2: a picture and a
    clip. The project has one export."""
    project = make_project(pages=2)
    first, second = project.pages.order_by("number")
    picture(first, Status.REPLACED, thumbnail=True)
    picture(first, Status.COMPLETE, thumbnail=True)
    Illustration.objects.create(page=first, status=Status.FAILED)
    clip(first, Status.REPLACED)
    clip(first)
    picture(second, Status.COMPLETE)
    clip(second)
    export(project)
    return project


# --- deleting a page or a project ------------------------------------------------------------


@pytest.mark.storage
@pytest.mark.django_db
def test_removing_a_page_deletes_every_picture_version_thumbnail_and_clip_of_that_page(
    media, book, django_capture_on_commit_callbacks
):
    first, second = book.pages.order_by("number")
    kept = sorted(
        [
            *Illustration.objects.filter(page=second).values_list("image", flat=True),
            *Clip.objects.filter(page=second).values_list("video", flat=True),
            *Export.objects.values_list("file", flat=True),
        ]
    )
    assert len(stored(media)) == 9

    with django_capture_on_commit_callbacks(execute=True):
        services.remove_page(page=first)

    assert stored(media) == kept


@pytest.mark.storage
@pytest.mark.django_db
def test_deleting_a_project_deletes_pictures_thumbnails_clips_and_exports_and_nothing_else(
    media, book, make_project, django_capture_on_commit_callbacks
):
    other = make_project(pages=1, title="Another Book")
    others = sorted([picture(other.pages.get(), Status.COMPLETE, thumbnail=True), export(other)])
    others.append(thumbnail_name(others[1]))
    assert len(stored(media)) == 12

    with django_capture_on_commit_callbacks(execute=True):
        services.delete_project(project=book)

    assert stored(media) == sorted(others)


@pytest.mark.django_db
def test_deleting_a_project_deletes_the_files_of_pages_removed_before_this_fix(
    media, book, django_capture_on_commit_callbacks
):
    # What removing a page did before: the rows go, their files stay, named by no row.
    book.pages.get(number=1).delete()
    assert len(stored(media)) == 9

    with django_capture_on_commit_callbacks(execute=True):
        services.delete_project(project=book)

    assert stored(media) == []


@pytest.mark.storage
@pytest.mark.django_db
def test_files_already_missing_do_not_stop_the_others_going(
    media, book, django_capture_on_commit_callbacks
):
    default_storage.delete(Illustration.objects.filter(status=Status.COMPLETE).first().image.name)
    default_storage.delete(Export.objects.get().file.name)

    with django_capture_on_commit_callbacks(execute=True):
        services.delete_project(project=book)

    assert stored(media) == []


@pytest.mark.storage
@pytest.mark.django_db(transaction=True)
def test_files_go_only_once_the_deletion_commits_and_a_rollback_deletes_none(media, book):
    first = book.pages.get(number=1)

    class Abandon(Exception):
        pass

    with pytest.raises(Abandon), transaction.atomic():
        services.remove_page(page=first)
        raise Abandon
    with pytest.raises(Abandon), transaction.atomic():
        services.delete_project(project=book)
        raise Abandon
    assert len(stored(media)) == 9
    book = Project.objects.get()  # the deletion had cleared the objects' ids
    first = book.pages.get(number=1)

    with transaction.atomic():
        services.remove_page(page=first)
        assert len(stored(media)) == 9  # not yet: the transaction could still roll back
    assert len(stored(media)) == 3

    services.delete_project(project=book)
    assert stored(media) == []


@pytest.mark.django_db
def test_the_delete_page_says_what_goes_and_the_message_stays_true(
    media, book, client, editor, django_capture_on_commit_callbacks
):
    client.force_login(editor)
    confirm = client.get(reverse("project-delete", args=[book.pk])).content.decode()
    assert (
        "This deletes its 2 pages, 3 stored images, 3 clips, 1 export and all generation history."
        in confirm
    )

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("project-delete", args=[book.pk]), follow=True)

    assert [str(m) for m in response.context["messages"]] == [
        "Deleted “A Book” with its images, clips and exports."
    ]
    assert stored(media) == []


@pytest.mark.django_db
def test_deleting_projects_in_the_admin_deletes_their_files_too(
    media, book, make_project, client, django_user_model, django_capture_on_commit_callbacks
):
    client.force_login(django_user_model.objects.create_superuser("operator", "", "op-password"))
    other = make_project(pages=1, title="Another Book")
    picture(other.pages.get(), Status.COMPLETE, thumbnail=True)
    assert len(stored(media)) == 11

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("admin:studio_project_delete", args=[book.pk]), {"post": "yes"})
    assert len(stored(media)) == 2
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            reverse("admin:studio_project_changelist"),
            {"action": "delete_selected", "_selected_action": [other.pk], "post": "yes"},
        )

    assert (Project.objects.count(), stored(media)) == (0, [])


# --- purge_orphan_files ------------------------------------------------------------------------


def age(media: Path, name: str, *, minutes: float) -> None:
    then = time.time() - minutes * 60
    os.utime(media / name, (then, then))


def purge(*args) -> list[str]:
    out = StringIO()
    call_command("purge_orphan_files", *args, stdout=out)
    return out.getvalue().splitlines()


@pytest.fixture
def orphans(media, book):
    """Files that no row names, as a killed worker or a deletion from before this fix left
    them, all written 20 minutes ago: {name: listed size}."""
    pid = book.pk
    left = {
        f"illustrations/{pid}/killed.png": 300,
        f"illustrations/{pid}/killed.thumb.webp": 40,
        f"illustrations/{pid}/gone-long-ago.thumb.webp": 40,
        f"clips/{pid}/killed.mp4": 3000,
        f"exports/{pid}/0123abcd/a-book.pdf": 2_000_000,
        "illustrations/999999/deleted-project.png": 5,
        "exports/not-a-project/notes.txt": 5,
        "clips/stray.mp4": 1,
    }
    for name, size in left.items():
        default_storage.save(name, ContentFile(b"x" * size))
    for name in stored(media):
        age(media, name, minutes=20)
    return left


LISTED = {300: "300 bytes", 40: "40 bytes", 3000: "2.9 KB", 2_000_000: "1.9 MB", 5: "5 bytes"}


def listing(orphans: dict) -> list[str]:
    return sorted(f"{name}  {LISTED.get(size, '1 byte')}" for name, size in orphans.items())


@pytest.mark.django_db
def test_purge_removes_only_the_files_no_row_owns_and_reports_counts_and_bytes(media, orphans):
    owned = sorted(set(stored(media)) - set(orphans))
    assert len(owned) == 9

    *removed, summary = purge()

    assert sorted(removed) == listing(orphans)
    assert summary == "Removed 8 orphan files (1.9 MB)."
    assert stored(media) == owned
    assert purge() == ["Removed 0 orphan files (0 bytes)."]


@pytest.mark.django_db
def test_a_dry_run_lists_what_it_would_remove_and_removes_nothing(media, orphans):
    before = stored(media)

    *listed, summary = purge("--dry-run")

    assert sorted(listed) == listing(orphans)
    assert summary == "Would remove 8 orphan files (1.9 MB)."
    assert stored(media) == before


@pytest.mark.django_db
def test_files_written_within_the_grace_period_are_left_for_a_live_worker(media, book):
    name = f"illustrations/{book.pk}/saving-now.png"
    default_storage.save(name, ContentFile(b"x" * 10))
    age(media, name, minutes=5)

    assert purge() == [
        "Removed 0 orphan files (0 bytes).",
        "Skipped 1 unowned file written in the last 15 minutes.",
    ]
    assert purge("--min-age", "4") == [f"{name}  10 bytes", "Removed 1 orphan file (10 bytes)."]
    assert not default_storage.exists(name)


@pytest.mark.django_db
def test_a_file_named_by_a_row_of_another_project_is_owned(media, book, make_project):
    # The admin can move a job to another project's page; its files stay where they were.
    moved = Illustration.objects.filter(page__project=book, status=Status.COMPLETE).first()
    Illustration.objects.filter(pk=moved.pk).update(page=make_project(pages=1).pages.get())
    for name in stored(media):
        age(media, name, minutes=20)

    assert purge() == ["Removed 0 orphan files (0 bytes)."]
    assert len(stored(media)) == 9


@pytest.mark.django_db
def test_a_file_the_storage_cannot_delete_is_reported_and_exits_1(media, orphans, monkeypatch):
    stuck = "clips/stray.mp4"
    delete = default_storage.delete

    def storage_refuses(name):
        if name == stuck:
            raise OSError("storage unavailable")
        delete(name)

    monkeypatch.setattr(default_storage, "delete", storage_refuses)
    out = StringIO()
    with pytest.raises(CommandError, match="Could not remove 1 file; see the warnings above.") as e:
        call_command("purge_orphan_files", stdout=out)
    assert e.value.returncode == 1
    assert out.getvalue().splitlines()[-1] == "Removed 7 orphan files (1.9 MB)."
    assert [name for name in stored(media) if name in orphans] == [stuck]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("min_age", "message"),
    [
        ("-1", "--min-age must be 0 or more minutes"),
        ("soon", "argument --min-age: invalid int value: 'soon'"),
    ],
)
def test_a_bad_min_age_exits_2_with_one_line(min_age, message):
    with pytest.raises(CommandError, match=re.escape(message)) as raised:
        call_command("purge_orphan_files", "--min-age", min_age)
    assert raised.value.returncode == 2


def test_from_the_shell_an_unknown_option_exits_2_with_one_line():
    from tests.conftest import ROOT

    result = subprocess.run(
        [sys.executable, "manage.py", "purge_orphan_files", "--yes"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"},
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        "manage.py purge_orphan_files: error: unrecognized arguments: --yes"
    ]


@pytest.mark.django_db
def test_purge_asks_the_database_per_project_folder_not_per_file(
    media, make_project, django_assert_num_queries
):
    for _ in range(3):
        for page in make_project(pages=10).pages.all():
            picture(page, Status.COMPLETE, thumbnail=True)
    for name in stored(media):
        age(media, name, minutes=20)

    # Each project folder: its pictures, clips, upscales, exports, reference pictures and
    # generated covers, in six queries.
    with django_assert_num_queries(18):
        assert purge() == ["Removed 0 orphan files (0 bytes)."]
    assert len(stored(media)) == 60
