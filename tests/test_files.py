"""Files follow their owner: deleting a page or project deletes its stored files once the
deletion commits."""

from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.urls import reverse

from generation.models import Clip, Illustration
from generation.thumbnails import thumbnail_name
from studio import services
from studio.models import Export, Project

Status = Illustration.Status


@pytest.fixture
def media(settings, tmp_path):
    """A MEDIA_ROOT of this test's own, so exact listings see no other test's files."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def stored(media: Path) -> list[str]:
    return sorted(str(p.relative_to(media)) for p in media.rglob("*") if p.is_file())


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


@pytest.mark.django_db
def test_files_already_missing_do_not_stop_the_others_going(
    media, book, django_capture_on_commit_callbacks
):
    default_storage.delete(Illustration.objects.filter(status=Status.COMPLETE).first().image.name)
    default_storage.delete(Export.objects.get().file.name)

    with django_capture_on_commit_callbacks(execute=True):
        services.delete_project(project=book)

    assert stored(media) == []


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
