"""The printed book: one geometry for the preview and the PDFs, print-ready interior and
cover files checked with a PDF library, the resolution report, and the EPUB under
epubcheck."""

import io
import os
import re
import shutil
import subprocess
import zipfile
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from pypdf import PdfReader

from generation import services
from studio import geometry
from studio.geometry import BLEED, INCH, Book, Cover, parse_trim
from studio.models import Export, Project
from studio.printing import report_lines
from studio.tasks import run_export
from studio.typeset import set_text, text_width

pytestmark = pytest.mark.django_db

EVERY_TRIM = [*geometry.PRESETS, "7x9"]


@pytest.fixture
def book(make_project, openai_settings, drain):
    """Three pages with the fake service's pictures (64 × 64 pixels)."""
    project = make_project(pages=3, title="The River Fox")
    project.author = "Ada Fox"
    project.save()
    drain(services.generate_missing(project=project).run.pk)
    return project


@pytest.fixture
def demo(drain):
    """The demo book, its first four pages drawn by the offline renderer; the others
    print as placeholders."""
    call_command("seed_demo")
    project = Project.objects.get(title="The Tale of Peter Rabbit")
    drain(services.generate_missing(project=project).run.pk, limit=4)
    return project


def export_file(project, format, **fields) -> bytes:
    export = Export.objects.create(project=project, format=format, **fields)
    run_export(export.pk)
    export.refresh_from_db()
    assert export.status == "complete", export.error
    with export.file.open("rb") as handle:
        return handle.read()


def box(page, name) -> list[float]:
    return [round(float(value), 2) for value in page[name]]


# --- the geometry ----------------------------------------------------------------------------


def test_a_print_page_is_the_trim_plus_kdps_bleed_on_its_outside_edge():
    book = Book(trim=parse_trim("8.5x8.5"), pages=24)
    title, left = book.sheet(1), book.sheet(2)
    assert (title.width, title.height) == (8.625 * INCH, 8.75 * INCH)
    assert title.recto and not left.recto
    assert (title.trim.x, title.trim.y) == (0, BLEED)  # a right-hand page bleeds on its right
    assert (left.trim.x, left.trim.y) == (BLEED, BLEED)  # a left-hand page on its left
    # The picture fills the whole sheet: 1,024 pixels across 8.75 in are 117 DPI.
    assert left.picture == left.bleed
    assert left.picture.dpi((1024, 1024)) == 117
    # Text keeps 0.25 in inside the trim, and more on the gutter's side.
    text = book.sheet(3).text
    assert text.x - book.sheet(3).trim.x >= 0.25 * INCH + book.gutter
    assert book.sheet(3).trim.right - text.right >= 0.25 * INCH


def test_page_one_is_a_right_hand_page_and_spreads_pair_two_and_three():
    square = Book(trim=parse_trim("8.5x8.5"), pages=3)
    assert square.sheet_count == 8  # title, 3 × (picture, text), a closing blank page
    assert [square.spread(n) for n in (1, 2, 4, 5)] == [(None, 1), (2, 3), (6, 7), (8, None)]
    assert [square.role_of(n) for n in (1, 2, 3, 8)] == [
        ("title", None),
        ("picture", 0),
        ("text", 0),
        ("blank", None),
    ]
    tall = Book(trim=parse_trim("8x10"), pages=3)
    assert tall.sheet_count == 4
    assert [tall.role_of(n) for n in (2, 3, 4)] == [("both", 0), ("both", 1), ("both", 2)]


def test_trims_are_presets_or_a_custom_size_in_inches():
    assert parse_trim("a4").width == pytest.approx(595.28, abs=0.01)
    assert parse_trim(" 7 x 9 ").key == "7x9"
    assert parse_trim("8.5X8.5").key == "8.5x8.5"
    for bad, reason in [
        ("a3", "trim must be one of"),
        ("2x9", "from 4 to 14 inches, not 2"),
        ("7x", "trim must be one of"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_trim(bad)


def test_the_cover_is_back_spine_and_front_with_bleed_on_every_edge():
    trim = parse_trim("8.5x8.5")
    cover = Cover(trim=trim, pages=100, paper="white")
    spine = float(Decimal("0.002252") * 100) * INCH
    assert cover.spine == pytest.approx(spine)
    assert cover.width == pytest.approx(2 * trim.width + spine + 0.25 * INCH)
    assert cover.height == pytest.approx(trim.height + 0.25 * INCH)
    assert Cover(trim=trim, pages=79, paper="cream").spine_text
    assert not Cover(trim=trim, pages=78, paper="premium").spine_text


def test_text_is_set_at_the_largest_size_that_fits_and_what_cannot_fit_is_counted():
    box = Book(trim=parse_trim("8x10"), pages=1).sheet(2).text
    short = set_text("The fox woke early.\n\nShe ran to the river.", box)
    assert short.size == 18 and short.cut == 0
    long = set_text("The fox ran on and on through the wet meadow. " * 120, box)
    assert long.size == 8 and long.cut > 0
    for line in [*short.lines, *long.lines]:
        assert box.x <= line.x and line.x + text_width(line.text, line.face, line.size) <= (
            box.right + 0.01
        )
        assert box.y <= line.y - line.size * 0.73 and line.y + line.size * 0.27 <= box.bottom


def test_a_page_whose_text_does_not_fit_is_in_the_print_report(make_project):
    project = make_project(pages=1)
    project.pages.update(text="The fox ran on and on through the wet meadow. " * 120)
    export = Export.objects.create(project=project, format="print", trim="8x10")
    run_export(export.pk)
    export.refresh_from_db()
    (entry,) = export.report
    assert entry["page"] == 1 and entry["cut_lines"] > 0
    assert report_lines(export.report) == [
        f"Page 1: {entry['cut_lines']} line(s) of text do not fit and are left out"
    ]


# --- the print interior -------------------------------------------------------------------------


def test_the_demo_books_print_pdf_has_trim_and_bleed_boxes_on_every_page_and_nothing_else(
    demo,
):
    reader = PdfReader(io.BytesIO(export_file(demo, "print", trim="8.5x8.5")))
    plan = Book(trim=parse_trim("8.5x8.5"), pages=24)
    assert len(reader.pages) == plan.sheet_count == 50
    for number, page in enumerate(reader.pages, 1):
        width = 8.625 * INCH
        outside = 0 if number % 2 else BLEED  # where the trim starts: after a left bleed
        assert box(page, "/MediaBox") == [0, 0, width, 630]
        assert box(page, "/BleedBox") == [0, 0, width, 630]
        assert box(page, "/TrimBox") == [outside, 9, outside + 612, 621]
        assert "/Annots" not in page
    assert "/Outlines" not in reader.trailer["/Root"]
    assert [n for n, page in enumerate(reader.pages, 1) if page.images] == [2, 4, 6, 8]
    fonts = [
        font.get_object()
        for page in reader.pages
        for font in page.get("/Resources", {}).get("/Font", {}).values()
    ]
    assert len(fonts) > 50  # the title page, the text pages and the folios
    for font in fonts:
        assert font["/Subtype"] == "/TrueType", font["/BaseFont"]
        assert "/FontFile2" in font["/FontDescriptor"].get_object()  # embedded
    assert "Page 5: no illustration yet" in reader.pages[9].extract_text()


def test_the_print_command_reports_every_page_under_300_dpi(book, capsys, tmp_path):
    output = tmp_path / "book.pdf"
    call_command(
        "export_project", book.pk, "--format", "print", "--trim", "8x10", "--output", str(output)
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Wrote {output}: the print interior at 8 × 10 in, 4 pages."
    # 64 pixels (the fake service's) across 8.125 in (8 in and the outside bleed): 7 DPI.
    assert lines[1:4] == [f"Page {n}: 64 × 64 px prints at 7 DPI (under 300)" for n in (1, 2, 3)]
    assert "choose a larger size from the service" in lines[4]
    assert len(PdfReader(output).pages) == 4


def test_resampling_is_asked_for_and_marked_in_the_report(book, capsys, tmp_path):
    output = tmp_path / "book.pdf"
    call_command(
        "export_project", book.pk, "--format", "print", "--resample", "--output", str(output)
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (
        "Page 1: 64 × 64 px prints at 7 DPI (under 300); resampled locally to 300 DPI "
        "(Lanczos: smoother, no added detail)"
    )
    image = next(iter(PdfReader(output).pages[1].images)).image
    assert image.size == (round(8.625 * 300), round(8.75 * 300))  # 300 DPI across the sheet


def test_a_trim_the_studio_does_not_know_is_refused_in_one_line(book):
    with pytest.raises(CommandError, match="trim must be one of 8.5x8.5, 8x10"):
        call_command(
            "export_project", book.pk, "--format", "print", "--trim", "a3", "--output", "/dev/null"
        )


# --- the cover ------------------------------------------------------------------------------------


def test_the_cover_pdf_is_as_wide_as_two_trims_the_spine_and_the_bleed(book, tmp_path):
    book.cover_page = 2
    book.save()
    reader = PdfReader(io.BytesIO(export_file(book, "cover", trim="8.5x8.5", paper="cream")))
    (page,) = reader.pages
    pages = Book(trim=parse_trim("8.5x8.5"), pages=3).sheet_count
    width = 2 * 612 + pages * 0.0025 * INCH + 0.25 * INCH
    assert box(page, "/MediaBox") == [0, 0, round(width, 2), 630]
    assert box(page, "/TrimBox") == [9, 9, round(width - 9, 2), 621]
    assert box(page, "/BleedBox") == box(page, "/MediaBox")
    text = page.extract_text()
    assert "The River Fox" in text and "Ada Fox" in text
    assert text.count("The River Fox") == 1  # 8 pages: no text on so thin a spine


def test_a_book_of_79_pages_has_its_title_on_the_spine(make_project):
    project = make_project(pages=39, title="Long Walk")  # 1 + 78 + 1 printed pages
    reader = PdfReader(io.BytesIO(export_file(project, "cover", trim="8.5x8.5")))
    assert reader.pages[0].extract_text().count("Long Walk") == 2  # the front and the spine


# --- the preview is the printed book ----------------------------------------------------


SVG_NUMBER = r"(-?[\d.]+)"


def preview_sheets(client, project, trim) -> dict[int, dict]:
    """Read every printed page the preview shows (with its guides): the sheet (the SVG's
    viewBox), the trim line and the picture, in PDF's coordinates."""
    sheets, spread = {}, 1
    while True:
        url = reverse("project-book", args=[project.pk])
        html = client.get(url, {"spread": spread, "trim": trim, "guides": "1"}).content.decode()
        for figure in re.findall(r"<figure .*?</figure>", html, re.S):
            number = int(re.search(r'data-sheet="(\d+)"', figure)[1])
            width, height = map(
                float, re.search(rf'viewBox="0 0 {SVG_NUMBER} {SVG_NUMBER}"', figure).groups()
            )
            x, y, w, h = map(
                float,
                re.search(
                    rf'class="guide guide--trim" x="{SVG_NUMBER}" y="{SVG_NUMBER}" '
                    rf'width="{SVG_NUMBER}" height="{SVG_NUMBER}"',
                    figure,
                ).groups(),
            )
            sheet = {"media": [0, 0, width, height], "trim": [x, height - y - h, x + w, height - y]}
            picture = re.search(
                rf'class="sheet__picture" xlink:href="[^"]+" x="{SVG_NUMBER}" '
                rf'y="{SVG_NUMBER}" width="{SVG_NUMBER}" height="{SVG_NUMBER}"',
                figure,
            )
            if picture:
                x, y, w, h = map(float, picture.groups())
                sheet["picture"] = [x, height - y - h, x + w, height - y]
            sheet["lines"] = [
                (float(x), round(height - float(y), 2), float(size))
                for x, y, size in re.findall(
                    rf'<text class="sheet__text[^"]*" x="{SVG_NUMBER}" y="{SVG_NUMBER}" '
                    rf'font-size="{SVG_NUMBER}">',
                    figure,
                )
            ]
            sheets[number] = sheet
        if 'rel="next"' not in html:
            return sheets
        spread += 1


@pytest.mark.parametrize("trim", EVERY_TRIM)
def test_the_preview_shows_each_page_where_the_print_pdf_puts_it(signed_in, book, trim):
    shown = preview_sheets(signed_in, book, trim)
    reader = PdfReader(io.BytesIO(export_file(book, "print", trim=trim)))
    assert sorted(shown) == list(range(1, len(reader.pages) + 1))
    for number, page in enumerate(reader.pages, 1):
        preview = shown[number]
        assert preview["media"] == pytest.approx(box(page, "/MediaBox"), abs=0.01)
        assert preview["media"] == pytest.approx(box(page, "/BleedBox"), abs=0.01)
        assert preview["trim"] == pytest.approx(box(page, "/TrimBox"), abs=0.01)
        images = list(page.images)
        assert len(images) == ("picture" in preview)
        if images:
            # Where the PDF draws the picture: its placement matrix, from the content stream.
            placed = picture_placement(page)
            assert preview["picture"] == pytest.approx(placed, abs=0.01)
        # Every line of text starts where the PDF sets it, at its size: the title, the
        # page's text and its number.
        flat = [value for line in text_placements(page) for value in line]
        assert [value for line in preview["lines"] for value in line] == pytest.approx(
            flat, abs=0.01
        )
    assert sum(len(sheet["lines"]) for sheet in shown.values()) >= 1 + 2 * 3


def text_placements(page) -> list[tuple[float, float, float]]:
    """Return (x, baseline, size) of each line the page sets (reportlab's Tm and Tf)."""
    content = page.get_contents().get_data().decode("latin-1")
    return [
        (float(x), float(y), float(size))
        for x, y, size in re.findall(r"BT 1 0 0 1 ([\d.-]+) ([\d.-]+) Tm /\S+ ([\d.]+) Tf", content)
    ]


def picture_placement(page) -> list[float]:
    """Return [x0 y0 x1 y1] of the one image drawn on the page (reportlab's cm operator)."""
    content = page.get_contents().get_data().decode("latin-1")
    a, _, _, d, e, f = map(
        float,
        re.search(
            r"q\s+([\d.-]+) ([\d.-]+) ([\d.-]+) ([\d.-]+) ([\d.-]+) ([\d.-]+) cm\s+/\S+ Do", content
        ).groups(),
    )
    return [e, f, e + a, f + d]


@pytest.fixture
def signed_in(client, editor):
    client.force_login(editor)
    return client


def test_the_preview_pairs_the_spreads_of_a_printed_book(signed_in, book):
    url = reverse("project-book", args=[book.pk])
    first = signed_in.get(url).content.decode()
    assert "Spread 1 of 5 · title page" in first  # 8.5 × 8.5 in, the project's trim
    assert first.count("<figure ") == 1 and 'class="sheet sheet--absent"' in first
    second = signed_in.get(url, {"spread": 2}).content.decode()
    assert "Spread 2 of 5 · page 1" in second
    assert re.findall(r'class="sheet sheet--(\w+) sheet--(\w+)', second) == [
        ("left", "picture"),
        ("right", "text"),
    ]
    tall = signed_in.get(url, {"spread": 2, "trim": "8.5x11"}).content.decode()
    assert "Spread 2 of 3 · pages 1–2" in tall
    assert "guide--trim" not in tall  # the guides on request only
    assert signed_in.get(url, {"trim": "3x3"}).status_code == 400


# --- the export page and the settings ---------------------------------------------------------


def test_the_export_page_lists_the_pages_under_300_dpi_before_export(signed_in, book):
    html = signed_in.get(reverse("project-export", args=[book.pk])).content.decode()
    assert "Print resolution at 8.5 × 8.5 in" in html
    assert "3 pages print under 300 DPI" in html
    assert "needs 2588 × 2625 pixels" in html or "2588 × 2625 pixels" in html
    for n in (1, 2, 3):
        assert f"<li>Page {n}: 64 × 64 px, 7 DPI</li>" in html
    for value in ("print", "cover", "epub"):
        assert f'<option value="{value}"' in html
    for value in EVERY_TRIM[:-1]:
        assert f'<option value="{value}"' in html


def test_an_export_from_the_page_keeps_its_trim_paper_and_report(signed_in, book):
    url = reverse("project-export", args=[book.pk])
    signed_in.post(url, {"format": "cover", "page_size": "a4", "trim": "8x10", "paper": "cream"})
    export = Export.objects.get()
    assert (export.format, export.trim, export.paper, export.resample) == (
        "cover",
        "8x10",
        "cream",
        False,
    )


def test_an_export_with_a_trim_or_paper_the_studio_does_not_know_is_refused(signed_in, book):
    url = reverse("project-export", args=[book.pk])
    response = signed_in.post(url, {"format": "print", "page_size": "a4", "trim": "a3"})
    assert response.status_code == 422
    assert "Select a valid choice. a3 is not one of the available choices." in (
        response.content.decode()
    )
    response = signed_in.post(url, {"format": "cover", "page_size": "a4", "paper": "gold"})
    assert response.status_code == 422
    assert Export.objects.count() == 0


def picture_box(trim: str) -> tuple[int, int, int]:
    """Return the pixels a picture needs at 300 DPI on a 3-page book's picture pages at
    `trim`, and the DPI a 64-pixel picture prints at there, from the shared geometry."""
    book = Book(trim=parse_trim(trim), pages=3)
    box = book.sheet(book.first_sheet(0)).picture
    return round(box.width / INCH * 300), round(box.height / INCH * 300), round(box.dpi((64, 64)))


def test_the_dpi_list_follows_the_trim_chosen_in_the_form(signed_in, book):
    url = reverse("project-export", args=[book.pk])
    # As the choice changes: htmx asks for the list at that trim alone.
    htmx = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "resolution"}
    html = signed_in.get(url, {"trim": "8x10"}, **htmx).content.decode()
    assert html.lstrip().startswith('<section id="resolution"')
    assert "Print resolution at 8 × 10 in" in html
    assert "8.5 × 8.5 in" not in html
    width, height, dpi = picture_box("8x10")
    assert f"needs {width} × {height} pixels" in html or f"{width} × {height} pixels" in html
    assert (width, height) != picture_box("8.5x8.5")[:2]
    for n in (1, 2, 3):
        assert f"<li>Page {n}: 64 × 64 px, {dpi} DPI</li>" in html
    html = signed_in.get(url, {"trim": "7x9"}, **htmx).content.decode()
    assert "Print resolution at 7 × 9 in (custom)" in html
    width, height, dpi = picture_box("7x9")
    assert f"{width} × {height} pixels" in html
    assert f"<li>Page 1: 64 × 64 px, {dpi} DPI</li>" in html
    response = signed_in.get(url, {"trim": "a3"}, **htmx)
    assert response.status_code == 422
    assert "The trim must be one of" in response.content.decode()
    assert "Print resolution at 8.5 × 8.5 in" in response.content.decode()

    # Posted: a refused form lists the pages at the trim it was sent with.
    response = signed_in.post(
        url, {"format": "print", "page_size": "a4", "trim": "8x10", "paper": "gold"}
    )
    html = response.content.decode()
    assert response.status_code == 422
    assert "Print resolution at 8 × 10 in" in html
    assert '<option value="8x10" selected>' in html
    response = signed_in.post(url, {"format": "print", "page_size": "a4", "trim": "7x9"})
    assert response.status_code == 302
    assert Export.objects.get().trim == "7x9"  # a custom size is a choice too

    # The form's trim asks for the list again when it changes.
    html = signed_in.get(url).content.decode()
    select = rf'<select name="trim"[^>]*hx-get="{re.escape(url)}"[^>]*hx-target="#resolution"'
    assert re.search(select, html)


def test_the_settings_take_a_custom_trim_and_refuse_a_bad_one(signed_in, book):
    url = reverse("project-settings", args=[book.pk])
    form = {
        "title": book.title,
        "style_guide": "",
        "image_service": "openai",
        "trim": "custom",
        "paper": "white",
    }
    response = signed_in.post(url, {**form, "custom_trim": "20x9"})
    assert response.status_code in (200, 422)
    assert "from 4 to 14 inches, not 20" in response.content.decode()
    signed_in.post(url, {**form, "custom_trim": "7 x 9", "author": "Ada Fox", "cover_page": "2"})
    book.refresh_from_db()
    assert (book.trim, book.author, book.cover_page) == ("7x9", "Ada Fox", 2)
    response = signed_in.post(url, {**form, "trim": "a4", "cover_page": "9"})
    assert "This book has no page 9." in response.content.decode()


# --- the EPUB ----------------------------------------------------------------------------------


# Debian's epubcheck is a jar that /usr/bin/epubcheck runs through binfmt_misc, which not
# every container has: java runs it directly.
EPUBCHECK = "/usr/share/java/epubcheck.jar"


@pytest.mark.skipif(
    not (os.path.exists(EPUBCHECK) and shutil.which("java"))
    and not os.environ.get("STUDIO_REQUIRE_EPUBCHECK"),
    reason="epubcheck is not installed (apt-get install epubcheck)",
)
def test_the_demo_books_epub_passes_epubcheck(demo, tmp_path):
    project = demo
    epub = export_file(project, "epub")
    archive = zipfile.ZipFile(io.BytesIO(epub))
    assert archive.namelist()[0] == "mimetype"
    pages = [name for name in archive.namelist() if re.fullmatch(r"OEBPS/p\d+\.xhtml", name)]
    assert len(pages) == Book(trim=parse_trim(project.trim), pages=24).sheet_count == 50
    opf = archive.read("OEBPS/content.opf").decode()
    assert '<meta property="rendition:layout">pre-paginated</meta>' in opf
    assert 'idref="p0001" properties="page-spread-right"' in opf
    assert 'idref="p0002" properties="page-spread-left"' in opf
    path = tmp_path / "book.epub"
    path.write_bytes(epub)
    checked = subprocess.run(
        # A short run: the quick compiler alone and one GC thread start it in a third of the
        # time on two cores.
        ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-jar", EPUBCHECK, str(path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "No errors or warnings detected" in checked.stdout
