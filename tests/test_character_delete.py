"""Deleting a character (its pictures and their files go, its pages lose the tag, pictures
drawn with it read "Reference changed") and an earlier version of its reference picture
(never the chosen one)."""

import io

import pytest
from django.core.files.storage import default_storage
from django.urls import reverse
from PIL import Image

from generation import selectors, services
from generation.models import GenerationAttempt, SheetJob, SpendEntry
from studio import characters
from studio.characters import CharacterError, check_reference_image
from studio.models import Character, ReferenceImage

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def encoded(colour=(200, 50, 50)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def book(make_project):
    project = make_project(pages=3, title="Peter's Book")
    for page in project.pages.all():
        page.text = f"Peter in the garden, part {page.number}."
        page.save()
    project.pages.filter(number=3).update(text="The cat sat alone.")
    return project


@pytest.fixture
def peter(book):
    peter = characters.create_character(
        project=book, name="Peter", image=check_reference_image(encoded())
    )
    characters.add_reference(character=peter, image=check_reference_image(encoded((1, 2, 3))))
    return Character.objects.get(pk=peter.pk)


def illustrate(project, drain):
    run = services.generate_missing(project=project).run
    drain(run.pk)


@pytest.mark.storage
def test_deleting_a_character_deletes_its_pictures_and_files_and_untags_its_pages(
    book, peter, drain, client, editor, django_capture_on_commit_callbacks
):
    illustrate(book, drain)
    files = [version.image.name for version in peter.versions.all()]
    assert len(files) == 2 and all(default_storage.exists(name) for name in files)
    client.force_login(editor)
    url = reverse("character-delete", args=[peter.pk])

    asked = client.get(url).content.decode()
    assert "Delete Peter?" in asked
    assert "2 reference pictures" in asked and "the 2 pages it is tagged on" in asked
    assert "2 pages were drawn with Peter's picture" in asked
    assert Character.objects.count() == 1  # asking deletes nothing

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, follow=True)
    assert "Deleted Peter and its pictures. 2 illustrated pages drawn with it now read" in (
        response.content.decode()
    )
    assert Character.objects.count() == 0 and ReferenceImage.objects.count() == 0
    assert not any(default_storage.exists(name) for name in files)
    assert [page.characters.count() for page in book.pages.all()] == [0, 0, 0]
    # Pictures drawn with Peter stay, offered for regeneration; page 3 never had him.
    changed = selectors.reference_changed_pages(book, book.pages.all())
    assert sorted(page.number for page in changed) == [1, 2]


def test_deleting_a_character_keeps_the_spend_of_its_sheets(
    book, peter, drain, openai_settings, django_capture_on_commit_callbacks
):
    run = services.draw_sheet(character=peter).run
    drain(run.pk, kind="sheet")
    assert GenerationAttempt.objects.filter(sheet__character=peter).count() == 1
    spent = list(SpendEntry.objects.values_list("kind", "amount"))
    assert len(spent) == 1 and spent[0][1] > 0
    with django_capture_on_commit_callbacks(execute=True):
        characters.delete_character(character=peter)
    assert SheetJob.objects.count() == 0 and GenerationAttempt.objects.count() == 0
    assert list(SpendEntry.objects.values_list("kind", "amount")) == spent


def test_a_character_whose_sheet_a_worker_is_drawing_is_not_deleted(book, peter, client, editor):
    services.draw_sheet(character=peter)
    SheetJob.objects.update(status=SheetJob.Status.GENERATING)
    client.force_login(editor)
    response = client.post(reverse("character-delete", args=[peter.pk]), follow=True)
    assert "A sheet of Peter is being drawn; delete it once that is done." in (
        response.content.decode()
    )
    assert Character.objects.count() == 1
    with pytest.raises(CharacterError):
        characters.delete_character(character=peter)


def test_an_earlier_version_is_deleted_with_its_file_but_the_chosen_one_is_not(
    peter, client, editor, django_capture_on_commit_callbacks
):
    chosen, earlier = peter.reference, peter.versions.exclude(pk=peter.reference_id).get()
    client.force_login(editor)
    edit = client.get(reverse("character-edit", args=[peter.pk])).content.decode()
    assert reverse("reference-delete", args=[earlier.pk]) in edit
    assert reverse("reference-delete", args=[chosen.pk]) not in edit

    refused = client.get(reverse("reference-delete", args=[chosen.pk])).content.decode()
    assert "choose another version before deleting it" in refused
    response = client.post(reverse("reference-delete", args=[chosen.pk]), follow=True)
    assert f"Version {chosen.pk} is the picture sent with Peter&#x27;s pages" in (
        response.content.decode()
    )
    assert ReferenceImage.objects.count() == 2

    name = earlier.image.name
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("reference-delete", args=[earlier.pk]), follow=True)
    assert f"Deleted version {earlier.pk} of Peter." in response.content.decode()
    assert list(ReferenceImage.objects.all()) == [chosen]
    assert not default_storage.exists(name) and default_storage.exists(chosen.image.name)


def test_history_and_the_prompt_panel_show_the_references_sent_and_the_prompt(
    book, peter, drain, client, editor
):
    illustrate(book, drain)
    client.force_login(editor)
    page = book.pages.get(number=1)
    thumbnail = reverse("reference-image", args=[peter.reference_id])
    history = client.get(reverse("page-history", args=[page.pk])).content.decode()
    assert history.count(thumbnail) == 1
    assert f'alt="Peter (version {peter.reference_id})"' in history
    assert "Prompt sent: " in history and "Peter in the garden, part 1." in history
    panel = client.get(reverse("page-prompt", args=[page.pk])).content.decode()
    assert "Composed prompt" in panel and "The current picture was drawn from" in panel
    assert panel.count(thumbnail) == 2  # sent now, and sent with the current picture
    lonely = book.pages.get(number=3)
    history = client.get(reverse("page-history", args=[lonely.pk])).content.decode()
    assert "No reference pictures were sent." in history and thumbnail not in history


def test_history_names_a_deleted_version_without_its_thumbnail(book, peter, drain, client, editor):
    illustrate(book, drain)
    sent = peter.reference_id
    other = peter.versions.exclude(pk=sent).get()
    characters.choose_reference(character=peter, version=other)
    characters.delete_reference(version=ReferenceImage.objects.get(pk=sent))
    client.force_login(editor)
    page = book.pages.get(number=1)
    history = client.get(reverse("page-history", args=[page.pk])).content.decode()
    assert f"Peter · v{sent} (deleted)" in history
    assert reverse("reference-image", args=[sent]) not in history


def test_only_the_owner_may_delete(book, peter, client, other_editor):
    client.force_login(other_editor)
    assert client.post(reverse("character-delete", args=[peter.pk])).status_code == 404
    earlier = peter.versions.exclude(pk=peter.reference_id).get()
    assert client.post(reverse("reference-delete", args=[earlier.pk])).status_code == 404
    assert Character.objects.count() == 1 and ReferenceImage.objects.count() == 2


def test_the_admin_deletes_a_character_with_its_files(
    peter, client, django_user_model, django_capture_on_commit_callbacks
):
    files = [version.image.name for version in peter.versions.all()]
    staff = django_user_model.objects.create_superuser("ops", password="ops-password")
    client.force_login(staff)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:studio_character_delete", args=[peter.pk]), {"post": "yes"}
        )
    assert response.status_code == 302
    assert Character.objects.count() == 0 and ReferenceImage.objects.count() == 0
    assert not any(default_storage.exists(name) for name in files)


def test_a_queued_sheet_goes_with_its_character_and_its_run_ends(
    book, peter, drain, django_capture_on_commit_callbacks
):
    run = services.draw_sheet(character=peter).run
    with django_capture_on_commit_callbacks(execute=True):
        characters.delete_character(character=peter)
    assert SheetJob.objects.count() == 0
    assert drain(run.pk, kind="sheet") == 0  # the queued task finds nothing to draw
    run.refresh_from_db()
    assert run.state == "finished"
