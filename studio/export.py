"""Exports: a ZIP of every current illustration with the texts and a manifest, or a PDF
picture book. A worker builds them page by page into a temporary file, so memory stays
flat however long the book; missing pages are never skipped: they get a placeholder.
"""

import io
import itertools
import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from xml.sax.saxutils import escape

from django.core.files import File
from django.core.files.storage import default_storage
from django.db.models import Sum
from django.utils import timezone
from django.utils.text import slugify
from PIL import Image, ImageDraw, ImageFont

from generation.models import Illustration
from generation.pricing import amount

from .models import Character, Export, Page, Project, ReferenceImage

PDF_SIZES = {
    # points (1/72 inch)
    Export.PageSize.A4: (595.28, 841.89),
    Export.PageSize.LETTER: (612.0, 792.0),
    Export.PageSize.SQUARE: (595.28, 595.28),
}
PDF_IMAGE_SIDE = 1600  # pixels: plenty for print at this size, light in the file
PDF_PART_PAGES = 25


@dataclass
class BookPage:
    page: Page
    illustration: Illustration | None
    cost: Decimal


def book_pages(project: Project):
    """Yield every page in order with its current illustration (None when missing)."""
    current = {
        job.page_id: job
        for job in Illustration.objects.filter(
            page__project=project, status=Illustration.Status.COMPLETE
        ).annotate(total_cost=Sum("attempts__cost"))
    }
    for page in project.pages.order_by("number").iterator(chunk_size=200):
        job = current.get(page.pk)
        yield BookPage(page=page, illustration=job, cost=amount(job.total_cost if job else 0))


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
    Export.objects.filter(pk=export.pk).update(
        status=Export.Status.RUNNING, pages_total=total, pages_done=0
    )
    build = build_zip if export.format == Export.Format.ZIP else build_pdf
    with tempfile.TemporaryDirectory(prefix="studio-export-") as work:
        path = Path(work) / ("book.zip" if export.format == Export.Format.ZIP else "book.pdf")
        missing = build(export, path)
        name = f"{slugify(project.title)[:60].strip('-') or 'book'}.{export.format}"
        with path.open("rb") as built:
            export.file.save(name, File(built), save=False)
    Export.objects.filter(pk=export.pk).update(
        status=Export.Status.COMPLETE,
        file=export.file.name,
        missing=missing,
        pages_done=total,
        finished_at=timezone.now(),
    )


def _progress(export: Export, done: int, every: int = 10) -> None:
    if done % every == 0:
        Export.objects.filter(pk=export.pk).update(pages_done=done)


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
    """Write a title page, then one page per book page with its picture and text.

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
                joined.save(path)
            finally:
                for source in sources:
                    source.close()
    return missing


def _draw_part(export: Export, path: Path, chunk: list, *, title_page: bool, work: Path) -> int:
    """Draw some pages (and the title page first) into a PDF file; return missing ones."""
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.pdfgen.canvas import Canvas

    project = export.project
    width, height = PDF_SIZES[export.page_size]
    margin = 15 * mm
    canvas = Canvas(str(path), pagesize=(width, height), pageCompression=1)
    text_style = ParagraphStyle("text", fontName="Helvetica", fontSize=12, leading=16)
    if title_page:
        canvas.setFont("Helvetica-Bold", 28)
        canvas.drawCentredString(width / 2, height * 0.6, project.title[:60])
        canvas.setFont("Helvetica", 13)
        canvas.drawCentredString(width / 2, height * 0.6 - 30, f"{project.pages.count()} pages")
        canvas.showPage()
    missing = 0
    text_height = min(height * 0.32, 70 * mm)
    picture_side = min(width - 2 * margin, height - 2 * margin - text_height - 8 * mm)
    x = (width - picture_side) / 2
    y = height - margin - picture_side
    for item in chunk:
        page, job = item.page, item.illustration
        if job is not None and job.image:
            picture = work / f"{page.number}.jpg"
            with default_storage.open(job.image.name, "rb") as source, Image.open(source) as image:
                image.thumbnail((PDF_IMAGE_SIDE, PDF_IMAGE_SIDE))
                image.convert("RGB").save(picture, format="JPEG", quality=85)
            canvas.drawImage(
                str(picture), x, y, picture_side, picture_side, preserveAspectRatio=True, anchor="c"
            )
            picture.unlink()
        else:
            missing += 1
            canvas.setFillGray(0.93)
            canvas.rect(x, y, picture_side, picture_side, stroke=0, fill=1)
            canvas.setFillGray(0.4)
            canvas.setFont("Helvetica", 14)
            canvas.drawCentredString(
                width / 2, y + picture_side / 2, f"Page {page.number}: no illustration yet"
            )
            canvas.setFillGray(0)
        _draw_text(
            canvas, page.text, text_style, margin, width - 2 * margin, top=y - 6 * mm, bottom=margin
        )
        canvas.setFont("Helvetica", 9)
        canvas.drawCentredString(width / 2, margin / 2, str(page.number))
        canvas.showPage()
    canvas.save()
    return missing


def _draw_text(canvas, text, style, x, width, *, top, bottom) -> None:
    """Draw the page text under the picture, smaller when it is long, so it always fits."""
    from reportlab.platypus import Paragraph

    markup = escape(text).replace("\n", "<br/>")
    for size in (12, 10, 8, 6):
        style.fontSize, style.leading = size, size * 1.3
        paragraph = Paragraph(markup, style)
        _, needed = paragraph.wrap(width, top - bottom)
        if needed <= top - bottom or size == 6:
            paragraph.drawOn(canvas, x, max(bottom, top - needed))
            return
