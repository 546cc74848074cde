"""Exports: a ZIP of every current illustration with the texts and a manifest, a PDF
picture book, the print-ready interior and cover (studio.printing), or an EPUB
(studio.epub). A worker builds them page by page into a temporary file, so memory stays
flat however long the book; missing pages are never skipped: they get a placeholder.
"""

import io
import json
import logging
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

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

from .geometry import PRESETS, Book, Trim, parse_trim
from .models import Character, Export, Page, Project, ReferenceImage
from .printing import Report, build_book_pdf, build_cover

logger = logging.getLogger(__name__)

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
    build, extension = BUILDERS[export.format]
    with tempfile.TemporaryDirectory(prefix="studio-export-") as work:
        path = Path(work) / f"book.{extension}"
        built = build(export, path)
        report = built if isinstance(built, Report) else Report(missing=built)
        suffix = {Export.Format.PRINT: "-print", Export.Format.COVER: "-cover"}.get(
            export.format, ""
        )
        name = f"{slugify(project.title)[:60].strip('-') or 'book'}{suffix}.{extension}"
        with path.open("rb") as written_file:
            export.file.save(name, File(written_file), save=False)
    written = write_when_free(
        Export.objects.filter(pk=export.pk),
        status=Export.Status.COMPLETE,
        file=export.file.name,
        missing=report.missing,
        report=report.entries,
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


# The screen PDF's page sizes, as trims: its pages are the printed book's, without bleed.
PDF_TRIMS = {
    Export.PageSize.A4: PRESETS["a4"],
    Export.PageSize.LETTER: PRESETS["8.5x11"],
    Export.PageSize.SQUARE: Trim("square", 210 / 25.4, 210 / 25.4, "Square (21 × 21 cm)"),
}


def export_trim(export: Export) -> Trim:
    """Return the trim the export is drawn at: its page size for the screen PDF, else its
    own trim (the project's when it was asked for)."""
    if export.format == Export.Format.PDF:
        return PDF_TRIMS[export.page_size]
    return parse_trim(export.trim or export.project.trim)


def build_pdf(export: Export, path: Path) -> Report:
    """The book to read on screen: the printed book's pages, without bleed."""
    trim = export_trim(export)
    book = Book(trim=trim, pages=export.project.pages.count(), bleed=False)
    return build_book_pdf(
        export,
        path,
        book=book,
        book_pages=book_pages(export.project),
        progress=lambda done: _progress(export, done, every=1),
    )


def build_print(export: Export, path: Path) -> Report:
    """The print-ready interior: full bleed, TrimBox and BleedBox on every page."""
    trim = export_trim(export)
    book = Book(trim=trim, pages=export.project.pages.count(), bleed=True)
    return build_book_pdf(
        export,
        path,
        book=book,
        book_pages=book_pages(export.project),
        progress=lambda done: _progress(export, done, every=1),
        resample=export.resample,
    )


def build_cover_file(export: Export, path: Path) -> Report:
    """The wraparound cover, its spine as thick as the print interior's pages."""
    trim = export_trim(export)
    pages = Book(trim=trim, pages=export.project.pages.count()).sheet_count
    return build_cover(export, path, trim=trim, pages=pages, resample=export.resample)


def build_epub_file(export: Export, path: Path) -> Report:
    from .epub import build_epub

    trim = export_trim(export)
    book = Book(trim=trim, pages=export.project.pages.count(), bleed=False)
    return build_epub(
        export,
        path,
        book=book,
        book_pages=book_pages(export.project),
        progress=lambda done: _progress(export, done, every=1),
    )


BUILDERS = {
    Export.Format.ZIP: (build_zip, "zip"),
    Export.Format.PDF: (build_pdf, "pdf"),
    Export.Format.PRINT: (build_print, "pdf"),
    Export.Format.COVER: (build_cover_file, "pdf"),
    Export.Format.EPUB: (build_epub_file, "epub"),
}
