"""The PDF is a picture book: checked by rendering its first pages to pixels (pypdfium2),
and paragraph breaks survive into the ZIP and the PDF."""

import io
import json
import zipfile

import pypdfium2
import pytest
from django.urls import reverse
from pypdf import PdfReader

from generation import services
from generation.fakes.openai import png_bytes
from studio.models import Export
from studio.tasks import run_export

pytestmark = pytest.mark.django_db

# The fake image service draws every picture in this one colour.
PICTURE = (120, 160, 90)
STORY = "The fox woke early.\nThe sun was low.\n\nShe ran to the river."


@pytest.fixture
def book(make_project, openai_settings, drain):
    project = make_project(pages=3, title="The River Fox")
    project.pages.filter(number=1).update(text=STORY)
    drain(services.generate_missing(project=project).run.pk)
    return project


def export_file(project, format, page_size) -> bytes:
    export = Export.objects.create(project=project, format=format, page_size=page_size)
    run_export(export.pk)
    export.refresh_from_db()
    assert export.status == "complete", export.error
    with export.file.open("rb") as handle:
        return handle.read()


def rendered(pdf: bytes, index: int):
    """Return the page as an RGB picture at 72 dpi (one pixel a point)."""
    document = pypdfium2.PdfDocument(pdf)
    return document[index].render(scale=1).to_pil().convert("RGB")


def share_of_picture(image, box=None) -> float:
    """Return the share of the pixels (in the box) that are the picture's colour."""
    region = image.crop(box) if box else image
    colours = dict((colour, count) for count, colour in region.getcolors(maxcolors=1 << 24))
    near = sum(
        count
        for colour, count in colours.items()
        if all(abs(a - b) <= 6 for a, b in zip(colour, PICTURE, strict=True))
    )
    return near / (region.width * region.height)


def line_tops(pdf: bytes, index: int, *phrases: str) -> list[float]:
    """Return where each phrase starts on the page, measured down from the top (points)."""
    page = pypdfium2.PdfDocument(pdf)[index]
    text = page.get_textpage()
    everything = text.get_text_range()
    height = page.get_height()
    return [height - text.get_charbox(everything.index(phrase))[3] for phrase in phrases]


@pytest.mark.parametrize("size", ["a4", "letter"])
def test_on_a_portrait_page_the_picture_runs_edge_to_edge_above_the_text(book, size):
    pdf = export_file(book, "pdf", size)
    first = rendered(pdf, 1)  # after the title page
    width, height = first.size
    assert share_of_picture(first) > 0.6  # most of the page is the picture
    # Full-bleed: the picture reaches the top edge and both sides.
    assert share_of_picture(first, (0, 0, width, 4)) == 1
    assert share_of_picture(first, (0, 0, 2, height // 2)) == 1
    assert share_of_picture(first, (width - 2, 0, width, height // 2)) == 1
    # The text is set beneath the picture, in the book face (embedded: see test_print).
    reader = PdfReader(io.BytesIO(pdf))
    assert "She ran to the river." in reader.pages[1].extract_text()
    fonts = {font["/BaseFont"] for font in reader.pages[1]["/Resources"]["/Font"].values()}
    assert "/AAAAAA+SourceSerifPro-Regular" in fonts
    (top,) = line_tops(pdf, 1, "The fox woke")
    assert top > height * 0.6


def test_on_a_square_page_each_book_page_is_a_spread_picture_facing_text(book):
    pdf = export_file(book, "pdf", "square")
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 1 + 2 * 3 + 1  # and a closing blank left-hand page
    assert reader.trailer["/Root"]["/PageLayout"] == "/TwoPageRight"
    assert share_of_picture(rendered(pdf, 1)) > 0.99  # the picture is the whole page
    facing = reader.pages[2].extract_text()
    assert "The fox woke early." in facing and "She ran to the river." in facing
    assert share_of_picture(rendered(pdf, 2)) == 0


def test_the_text_is_set_at_a_readable_size(book):
    pdf = export_file(book, "pdf", "a4")
    page = pypdfium2.PdfDocument(pdf)[1]
    text = page.get_textpage()
    index = text.get_text_range().index("The fox")
    left, bottom, right, top = text.get_charbox(index)  # the capital T
    assert top - bottom >= 9  # a cap height of 9 pt or more: text of at least 13 pt


def test_paragraph_breaks_are_kept_in_the_pdf(book):
    pdf = export_file(book, "pdf", "a4")
    first, second, new_paragraph = line_tops(pdf, 1, "The fox woke", "The sun was", "She ran to")
    line = second - first
    assert line > 0
    assert new_paragraph - second > 1.3 * line  # a paragraph break is more than a new line


def test_paragraph_breaks_are_kept_in_the_zip(book):
    archive = zipfile.ZipFile(io.BytesIO(export_file(book, "zip", "a4")))
    assert archive.read("page-01.txt").decode() == STORY + "\n"


def test_a_missing_picture_is_a_marked_placeholder_as_large_as_a_picture(
    make_project, openai_settings, fake_openai, drain
):
    project = make_project(pages=2, title="Half Done")
    fake_openai.rules.append(("number 1.", "400_policy"))
    drain(services.generate_missing(project=project).run.pk)
    pdf = export_file(project, "pdf", "a4")
    assert "Page 1: no illustration yet" in PdfReader(io.BytesIO(pdf)).pages[1].extract_text()
    assert share_of_picture(rendered(pdf, 2)) > 0.6


def test_the_export_form_offers_the_last_page_size_again(client, editor, book):
    client.force_login(editor)
    url = reverse("project-export", args=[book.pk])
    assert '<option value="a4" selected>' in client.get(url).content.decode()
    client.post(url, {"format": "pdf", "page_size": "square"})
    html = client.get(url).content.decode()
    assert '<option value="square" selected>' in html
    assert '<option value="pdf" selected>' in html


def test_the_fake_picture_colour_is_what_the_test_looks_for():
    # The coverage checks above rely on it: a change to the fake must show up here.
    from PIL import Image

    assert Image.open(io.BytesIO(png_bytes())).getpixel((0, 0)) == PICTURE


def test_a_sections_first_page_is_headed_by_its_name_in_the_pdf_and_the_zip(book):
    book.pages.filter(number__in=[2, 3]).update(section="Chapter 1")
    reader = PdfReader(io.BytesIO(export_file(book, "pdf", "a4")))
    texts = [page.extract_text() for page in reader.pages[1:]]
    assert ["Chapter 1" in text for text in texts] == [False, True, False]
    archive = zipfile.ZipFile(io.BytesIO(export_file(book, "zip", "a4")))
    manifest = json.loads(archive.read("manifest.json"))
    assert [page["section"] for page in manifest["pages"]] == ["", "Chapter 1", "Chapter 1"]
