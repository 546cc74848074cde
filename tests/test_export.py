"""Export: a ZIP with a manifest, a PDF picture book, placeholders, owners only."""

import io
import json
import zipfile

import pytest
from django.core.files.storage import default_storage
from django.urls import reverse
from pypdf import PdfReader

from generation import services
from generation.models import Illustration
from studio.models import Export
from studio.tasks import run_export
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db


@pytest.fixture
def book(make_project, openai_settings, fake_openai, drain):
    """Four pages, page 2 refused by the service: three pictures and one missing."""
    project = make_project(pages=4, title="The Fox Book")
    page = project.pages.get(number=3)
    page.label = "Beat 1.3"
    page.save()
    fake_openai.rules.append(("meadow number 2.", "400_policy"))
    drain(services.generate_missing(project=project).run.pk)
    return project


def export_file(project, format, page_size="a4") -> bytes:
    export = Export.objects.create(project=project, format=format, page_size=page_size)
    run_export(export.pk)
    export.refresh_from_db()
    assert export.status == "complete", export.error
    with export.file.open("rb") as handle:
        return handle.read()


@pytest.mark.storage
def test_the_zip_holds_every_picture_its_text_and_a_manifest(book):
    archive = zipfile.ZipFile(io.BytesIO(export_file(book, "zip")))
    assert sorted(archive.namelist()) == [
        "manifest.json",
        "page-01.png",
        "page-01.txt",
        "page-02-missing.png",
        "page-02.txt",
        "page-03.png",
        "page-03.txt",
        "page-04.png",
        "page-04.txt",
    ]
    stored = Illustration.objects.get(page__number=1, status="complete")
    assert archive.read("page-01.png") == stored.image.read()
    assert archive.read("page-03.txt").decode() == "Page 3: the fox crosses meadow number 3.\n"

    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["project"]["title"] == "The Fox Book"
    assert (manifest["project"]["pages"], manifest["project"]["missing"]) == (4, 1)
    third = manifest["pages"][2]
    assert third == {
        "number": 3,
        "label": "Beat 1.3",
        "section": "",
        "text": "Page 3: the fox crosses meadow number 3.",
        "image": "page-03.png",
        "missing": False,
        "prompt_sent": "Page 3: the fox crosses meadow number 3.",
        "provider": "openai",
        "model": "gpt-image-1",
        "size": "1024x1024",
        "cost": "0.0425",  # the usage the service reported, at gpt-image-1 token prices
        "created": third["created"],
        "references": [],  # the reference pictures sent with it: none in this book
    }
    assert third["created"].startswith("20")
    assert manifest["pages"][1]["missing"] is True
    assert manifest["pages"][1]["image"] == "page-02-missing.png"


@pytest.mark.storage
def test_the_pdf_is_a_picture_book_with_a_placeholder_for_missing_pages(book):
    reader = PdfReader(io.BytesIO(export_file(book, "pdf", "square")))
    # Square: a title page, then a spread per book page (picture, then the facing text), and
    # a blank page to end on a left-hand page, as a printed book does.
    assert len(reader.pages) == 10
    assert "The Fox Book" in reader.pages[0].extract_text()
    assert reader.pages[9].extract_text() == ""
    assert len(reader.pages[1].images) == 1
    assert "the fox crosses meadow number 1." in reader.pages[2].extract_text()
    assert "Page 2: no illustration yet" in reader.pages[3].extract_text()
    assert len(reader.pages[3].images) == 0
    width, height = reader.pages[1].mediabox.width, reader.pages[1].mediabox.height
    assert round(width) == round(height) == 595


@pytest.mark.parametrize(("size", "points"), [("a4", (595, 842)), ("letter", (612, 792))])
def test_pdf_page_sizes(book, size, points):
    reader = PdfReader(io.BytesIO(export_file(book, "pdf", size)))
    box = reader.pages[0].mediabox
    assert (round(box.width), round(box.height)) == points


def test_the_export_page_warns_about_missing_pages_first(
    client, editor, book, django_capture_on_commit_callbacks
):
    client.force_login(editor)
    url = reverse("project-export", args=[book.pk])
    html = client.get(url).content.decode()
    assert "1 of 4 pages has no illustration yet." in html
    assert "placeholder" in html
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(url, {"format": "zip", "page_size": "a4"})
    assert response.status_code == 302 and len(callbacks) == 1
    export = Export.objects.get()
    assert export.status == "queued"
    run_export(export.pk)
    html = client.get(url).content.decode()
    download = reverse("export-download", args=[export.pk])
    assert download in html and "1 placeholder" in html
    response = client.get(download)
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == 'attachment; filename="the-fox-book.zip"'
    assert zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).testzip() is None


def test_bad_export_choices_are_refused(client, editor, book):
    client.force_login(editor)
    response = client.post(reverse("project-export", args=[book.pk]), {"format": "exe"})
    assert response.status_code == 422
    assert "Select a valid choice" in response.content.decode()
    assert Export.objects.count() == 0


@pytest.mark.storage
def test_only_the_owner_can_export_or_download(client, editor, other_editor, book):
    export = Export.objects.create(project=book, format="zip")
    run_export(export.pk)
    urls = [reverse("project-export", args=[book.pk]), reverse("export-download", args=[export.pk])]
    for url in urls:
        assert client.get(url).status_code == 302  # anonymous: sign in first
    client.force_login(other_editor)
    for url in urls:
        assert client.get(url).status_code == 404
    assert client.post(urls[0], {"format": "zip", "page_size": "a4"}).status_code == 404
    assert Export.objects.count() == 1


@pytest.mark.storage
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_builds_the_export(client, editor, make_project, qcluster, drain):
    project = make_project(pages=3)
    drain(services.generate_missing(project=project).run.pk)
    qcluster()
    client.force_login(editor)
    client.post(reverse("project-export", args=[project.pk]), {"format": "pdf", "page_size": "a4"})
    export = Export.objects.get()
    wait_until(lambda: Export.objects.get(pk=export.pk).status == "complete", timeout=60)
    export.refresh_from_db()
    assert (export.pages_total, export.pages_done, export.missing) == (3, 3, 0)
    # The worker stored it where this process reads (the bucket, on S3), and the owner
    # downloads it from there: a title page, then a page per book page on A4.
    download = client.get(reverse("export-download", args=[export.pk]))
    body = b"".join(download.streaming_content)
    assert int(download["Content-Length"]) == len(body) == default_storage.size(export.file.name)
    assert len(PdfReader(io.BytesIO(body)).pages) == 4
