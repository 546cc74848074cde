"""Exports: a ZIP of every current illustration with the texts and a manifest, or a PDF
picture book. A worker builds them page by page into a temporary file, so memory stays
flat however long the book; missing pages are never skipped: they get a placeholder.
"""

import io
import itertools
import json
import logging
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from xml.sax.saxutils import escape

from django.core.files import File
from django.core.files.storage import default_storage
from django.db import OperationalError, transaction
from django.db.models import Sum
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.text import slugify
from PIL import Image, ImageDraw, ImageFont

from generation.models import Illustration
from generation.pricing import amount

from .models import Character, Export, Page, Project, ReferenceImage

logger = logging.getLogger(__name__)

PDF_SIZES = {
    # points (1/72 inch)
    Export.PageSize.A4: (595.28, 841.89),
    Export.PageSize.LETTER: (612.0, 792.0),
    Export.PageSize.SQUARE: (595.28, 595.28),
}
PDF_IMAGE_SIDE = 1600  # pixels: plenty for print at this size, light in the file
PDF_PART_PAGES = 25
PAGE_CHUNK = 200
# A progress write that meets a busy database is tried again after these pauses (seconds),
# then skipped: a progress tick is not worth failing a long export for.
BUSY_PAUSES = (0.05, 0.1, 0.2)


@dataclass
class BookPage:
    page: Page
    illustration: Illustration | None
    cost: Decimal
    starts_section: bool = False  # the first page of a named section: the PDF heads it


def book_pages(project: Project, *, chunk: int = PAGE_CHUNK):
    """Yield every page in order with its current illustration (None when missing).

    Pages are read a chunk at a time, each chunk fetched whole: no cursor stays open while
    the caller writes its progress. On SQLite an open read pins the connection's snapshot,
    and a write from a stale snapshot fails at once with "database is locked"."""
    section, after = "", None
    while True:
        pages = project.pages.order_by("number")
        if after is not None:
            pages = pages.filter(number__gt=after)
        pages = list(pages[:chunk])
        if not pages:
            return
        after = pages[-1].number
        current = {
            job.page_id: job
            for job in Illustration.objects.filter(
                page__in=[page.pk for page in pages], status=Illustration.Status.COMPLETE
            ).annotate(total_cost=Sum("attempts__cost"))
        }
        for page in pages:
            job = current.get(page.pk)
            starts = bool(page.section) and page.section != section
            section = page.section
            yield BookPage(
                page=page,
                illustration=job,
                cost=amount(job.total_cost if job else 0),
                starts_section=starts,
            )


def placeholder_png(number: int, size=(800, 800)) -> bytes:
    """Return a plain image that says the page has no illustration yet."""
    image = Image.new("RGB", size, (238, 240, 244))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=40)
    text = f"Page {number}\nno illustration yet"
    box = draw.multiline_textbbox((0, 0), text, font=font, align="center")
    x = (size[0] - (box[2] - box[0])) / 2
    y = (size[1] - (box[3] - box[1])) / 2
    draw.multiline_text((x, y), text, fill=(110, 116, 130), font=font, align="center")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def run_export(export: Export) -> None:
    """Build the export's file, updating its progress as pages are written."""
    project = export.project
    total = project.pages.count()
    write_when_free(
        Export.objects.filter(pk=export.pk),
        status=Export.Status.RUNNING,
        pages_total=total,
        pages_done=0,
        beat_at=Now(),
    )
    build = build_zip if export.format == Export.Format.ZIP else build_pdf
    with tempfile.TemporaryDirectory(prefix="studio-export-") as work:
        path = Path(work) / ("book.zip" if export.format == Export.Format.ZIP else "book.pdf")
        missing = build(export, path)
        name = f"{slugify(project.title)[:60].strip('-') or 'book'}.{export.format}"
        with path.open("rb") as built:
            export.file.save(name, File(built), save=False)
    written = write_when_free(
        Export.objects.filter(pk=export.pk),
        status=Export.Status.COMPLETE,
        file=export.file.name,
        missing=missing,
        pages_done=total,
        finished_at=timezone.now(),
        beat_at=Now(),
    )
    if not written:
        raise OperationalError("the database stayed locked while recording the finished export")


def write_when_free(rows, *, sleep=time.sleep, **fields) -> bool:
    """Update the rows, trying again after a short pause while the database is busy (another
    process holds SQLite's write lock); return whether the write went through."""
    for pause in (*BUSY_PAUSES, None):
        try:
            with transaction.atomic():  # a savepoint inside a caller's transaction
                rows.update(**fields)
            return True
        except OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            if pause is None:
                logger.warning("Gave up a write to %s: %s", rows.model.__name__, error)
                return False
            sleep(pause)
    return False


def _progress(export: Export, done: int, every: int = 10) -> None:
    """Record the pages done (and that the worker lives); a busy database skips a tick."""
    if done % every == 0:
        write_when_free(Export.objects.filter(pk=export.pk), pages_done=done, beat_at=Now())


def build_zip(export: Export, path: Path) -> int:
    """Write page-01.png …, page-01.txt … and manifest.json; return the missing count."""
    project = export.project
    width = max(2, len(str(project.pages.count())))
    entries, missing, used = [], 0, set()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for done, item in enumerate(book_pages(project), 1):
            page, job = item.page, item.illustration
            stem = f"page-{page.number:0{width}d}"
            if job is not None and job.image:
                # Pictures are already compressed: store them as they are, one at a time.
                with (
                    default_storage.open(job.image.name, "rb") as source,
                    archive.open(
                        zipfile.ZipInfo(f"{stem}.png", date_time=_zip_time(job)), "w"
                    ) as target,
                ):
                    shutil.copyfileobj(source, target, length=256 * 1024)
                image_name = f"{stem}.png"
            else:
                missing += 1
                image_name = f"{stem}-missing.png"
                archive.writestr(image_name, placeholder_png(page.number))
            archive.writestr(f"{stem}.txt", page.text + "\n")
            entries.append(
                {
                    "number": page.number,
                    "label": page.label,
                    "section": page.section,
                    "text": page.text,
                    "image": image_name,
                    "missing": job is None,
                    "prompt_sent": job.prompt_sent if job else None,
                    "provider": job.provider if job else None,
                    "model": job.model if job else None,
                    "size": job.size if job else None,
                    "cost": str(item.cost) if job else None,
                    "created": job.finished_at.isoformat() if job and job.finished_at else None,
                    "references": [
                        {
                            "character": ref["character"],
                            "name": ref["name"],
                            "version": ref["reference"],
                        }
                        for ref in (job.references_sent if job else [])
                    ],
                }
            )
            used.update(ref["reference"] for ref in (job.references_sent if job else []))
            _progress(export, done)
        characters, files = _write_references(archive, project, used)
        for entry in entries:
            for ref in entry["references"]:
                ref["file"] = files.get(ref["version"])  # None: that version was deleted
        manifest = {
            "project": {
                "id": project.pk,
                "title": project.title,
                "style_guide": project.style_guide,
                "pages": len(entries),
                "missing": missing,
                "exported": timezone.now().isoformat(),
            },
            "characters": characters,
            "pages": entries,
        }
        archive.writestr("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
    return missing


def reference_file(name: str, version_id: int) -> str:
    """Return where the ZIP keeps a version of a reference picture (its extension is the
    stored file's, set when it is written)."""
    return f"references/{slugify(name) or 'character'}-v{version_id}"


def _write_references(archive: zipfile.ZipFile, project: Project, used: set):
    """Write every character's chosen reference picture and every version a page was drawn
    with into references/; return the manifest's list of characters and {version id: file
    in the ZIP}."""
    characters = list(
        Character.objects.filter(project=project).prefetch_related("pages").order_by("name")
    )
    wanted = used | {c.reference_id for c in characters if c.reference_id}
    names = {c.pk: c.name for c in characters}
    files = {}
    for version in ReferenceImage.objects.filter(pk__in=wanted, character__project=project):
        extension = version.image.name.rsplit(".", 1)[-1]
        name = f"{reference_file(names[version.character_id], version.pk)}.{extension}"
        with default_storage.open(version.image.name, "rb") as source:
            archive.writestr(name, source.read())
        files[version.pk] = name
    listed = [
        {
            "id": character.pk,
            "name": character.name,
            "kind": character.kind,
            "description": character.description,
            "aliases": character.alias_list,
            "reference": files.get(character.reference_id),
            "pages": sorted(page.number for page in character.pages.all()),
        }
        for character in characters
    ]
    return listed, files


def _zip_time(job: Illustration):
    moment = timezone.localtime(job.finished_at or job.created_at)
    return (
        max(moment.year, 1980),
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
    )


def build_pdf(export: Export, path: Path) -> int:
    """Write a title page, then every book page as a picture book: see BookLayout.

    reportlab keeps a document in memory until it is saved, so the book is drawn in parts
    of PDF_PART_PAGES pages, each saved to disk, and pikepdf (qpdf) joins them: it copies
    the parts' streams from disk as it writes, so memory stays flat however long the book.
    """
    import pikepdf

    project = export.project
    missing = 0
    with tempfile.TemporaryDirectory(prefix="studio-pdf-") as work:
        parts = []
        book = book_pages(project)
        done = 0
        while True:
            part = Path(work) / f"part-{len(parts):04d}.pdf"
            chunk = list(itertools.islice(book, PDF_PART_PAGES))
            if parts and not chunk:
                break
            missing += _draw_part(export, part, chunk, title_page=not parts, work=Path(work))
            parts.append(part)
            done += len(chunk)
            _progress(export, done, every=1)
            if len(chunk) < PDF_PART_PAGES:
                break
        with pikepdf.Pdf.new() as joined:
            sources = [pikepdf.Pdf.open(part) for part in parts]
            try:
                for source in sources:
                    joined.pages.extend(source.pages)
                joined.docinfo["/Title"] = project.title
                # Viewers open it as a book: the title page alone, then facing pages.
                joined.Root.PageLayout = pikepdf.Name.TwoPageRight
                joined.save(path)
            finally:
                for source in sources:
                    source.close()
    return missing


# The book face: reportlab's built-in Times (no font file to ship; it covers Latin-1).
BOOK_FONT, BOOK_FONT_BOLD, BOOK_FONT_ITALIC = "Times-Roman", "Times-Bold", "Times-Italic"
TEXT_SIZES = (18, 16, 15, 14, 13, 12, 11, 10, 9, 8)  # points: the largest that fits is used
PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")


@dataclass(frozen=True)
class BookLayout:
    """Where a book page's picture and text go on a sheet of the chosen size.

    A square sheet has no room under the picture: each book page is a spread, the picture
    full-bleed on the left-hand page and the text on the facing page. A portrait sheet
    (A4, Letter) holds both: the picture full-bleed across the top, the text beneath; two
    book pages then face each other as a spread. Either way the PDF opens as spreads.
    """

    width: float
    height: float
    spread: bool
    picture: tuple[float, float, float, float]  # x, y, width, height (points)
    text: tuple[float, float, float, float]  # x, bottom, width, top
    folio_y: float


def book_layout(width: float, height: float) -> BookLayout:
    from reportlab.lib.units import mm

    if height < width * 1.2:  # square (or nearly): picture page + text page
        margin = 22 * mm
        return BookLayout(
            width,
            height,
            spread=True,
            picture=(0, 0, width, height),
            text=(margin, margin, width - 2 * margin, height - margin),
            folio_y=10 * mm,
        )
    picture_height = min(width, height * 0.68)
    margin = 18 * mm
    return BookLayout(
        width,
        height,
        spread=False,
        picture=(0, height - picture_height, width, picture_height),
        text=(margin, 16 * mm, width - 2 * margin, height - picture_height - 10 * mm),
        folio_y=8 * mm,
    )


def _draw_part(export: Export, path: Path, chunk: list, *, title_page: bool, work: Path) -> int:
    """Draw some pages (and the title page first) into a PDF file; return missing ones."""
    from reportlab.pdfgen.canvas import Canvas

    project = export.project
    width, height = PDF_SIZES[export.page_size]
    layout = book_layout(width, height)
    canvas = Canvas(str(path), pagesize=(width, height), pageCompression=1)
    if title_page:
        _draw_title(canvas, project, width, height)
    missing = 0
    for item in chunk:
        page, job = item.page, item.illustration
        if job is not None and job.image:
            _draw_picture(canvas, job, layout, work / f"{page.number}.jpg")
        else:
            missing += 1
            _draw_placeholder(canvas, page.number, layout)
        if layout.spread:
            canvas.showPage()  # the facing page holds the text
        _draw_text(canvas, page.text, layout, heading=page.section if item.starts_section else "")
        canvas.setFont(BOOK_FONT, 10)
        canvas.setFillGray(0.35)
        canvas.drawCentredString(width / 2, layout.folio_y, str(page.number))
        canvas.setFillGray(0)
        canvas.showPage()
    canvas.save()
    return missing


def _draw_title(canvas, project: Project, width: float, height: float) -> None:
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph

    style = ParagraphStyle("title", fontName=BOOK_FONT_BOLD, fontSize=34, leading=40, alignment=1)
    title = Paragraph(escape(project.title), style)
    _, needed = title.wrap(width - 40 * mm, height / 2)
    title.drawOn(canvas, 20 * mm, height * 0.58)
    canvas.setFont(BOOK_FONT_ITALIC, 14)
    pages = project.pages.count()
    canvas.drawCentredString(
        width / 2, height * 0.58 - 28, f"{pages} page{'s' if pages != 1 else ''}"
    )
    canvas.showPage()


def _draw_picture(canvas, job: Illustration, layout: BookLayout, picture: Path) -> None:
    """Draw the picture filling its box edge to edge (cropped to the box, never squashed)."""
    from PIL import ImageOps

    x, y, box_width, box_height = layout.picture
    scale = PDF_IMAGE_SIDE / max(box_width, box_height)
    pixels = (max(1, round(box_width * scale)), max(1, round(box_height * scale)))
    with default_storage.open(job.image.name, "rb") as source, Image.open(source) as image:
        ImageOps.fit(image.convert("RGB"), pixels).save(picture, format="JPEG", quality=85)
    canvas.drawImage(str(picture), x, y, box_width, box_height)
    picture.unlink()


def _draw_placeholder(canvas, number: int, layout: BookLayout) -> None:
    x, y, box_width, box_height = layout.picture
    canvas.setFillGray(0.93)
    canvas.rect(x, y, box_width, box_height, stroke=0, fill=1)
    canvas.setFillGray(0.4)
    canvas.setFont(BOOK_FONT_ITALIC, 16)
    canvas.drawCentredString(
        x + box_width / 2, y + box_height / 2, f"Page {number}: no illustration yet"
    )
    canvas.setFillGray(0)


def paragraphs_of(text: str) -> list[str]:
    """Return the page text's paragraphs: blank lines separate them."""
    return [part.strip() for part in PARAGRAPH_BREAK.split(text.strip()) if part.strip()]


def _draw_text(canvas, text: str, layout: BookLayout, *, heading: str = "") -> None:
    """Set the page text in the book face, paragraph by paragraph, at the largest size
    that fits its box, under the section's name on a section's first page; on a text page
    of a spread it sits in the middle of the page."""
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.platypus import Paragraph

    x, bottom, width, top = layout.text
    parts = [escape(part).replace("\n", "<br/>") for part in paragraphs_of(text)]
    for size in TEXT_SIZES:
        style = ParagraphStyle(
            "text", fontName=BOOK_FONT, fontSize=size, leading=size * 1.4, spaceAfter=size * 0.8
        )
        paragraphs = [Paragraph(part, style) for part in parts]
        if heading:
            bold = ParagraphStyle("heading", parent=style, fontName=BOOK_FONT_BOLD)
            paragraphs.insert(0, Paragraph(escape(heading), bold))
        heights = [paragraph.wrap(width, top - bottom)[1] for paragraph in paragraphs]
        needed = sum(heights) + style.spaceAfter * max(0, len(paragraphs) - 1)
        if needed <= top - bottom or size == TEXT_SIZES[-1]:
            break
    y = top - max(0, (top - bottom - needed) / 2) if layout.spread else top
    for paragraph, paragraph_height in zip(paragraphs, heights, strict=True):
        y -= paragraph_height
        paragraph.drawOn(canvas, x, max(bottom, y))
        y -= style.spaceAfter
