"""The fixed-layout EPUB 3: one XHTML page per printed page, each the same SVG the book
preview shows (templates/studio/sheet.svg) at the trim, without bleed; left- and right-hand
pages as the printed book has them, so a reading system pairs the same spreads. The face is
embedded; pictures travel as JPEG at their own pixels. Checked with epubcheck in the tests.
"""

import io
import uuid
import zipfile
from pathlib import Path

from django.core.files.storage import default_storage
from django.template.loader import render_to_string
from django.utils import timezone
from PIL import Image

from .geometry import Book
from .models import Export
from .printing import Report, sheets_of
from .typeset import FACES, FONTS

STYLESHEET = Path(__file__).resolve().parent.parent / "static" / "studio" / "book.css"
PAGE_CSS = "html, body { margin: 0; padding: 0; } svg { display: block; }\n"


def build_epub(export: Export, path: Path, *, book: Book, book_pages, progress) -> Report:
    """Write the EPUB, page after page into the archive (memory stays flat); return the
    report (the placeholders)."""
    project = export.project
    report = Report()
    identifier = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'illustration-studio/{project.pk}')}"
    items, spine, toc = [], [], []
    width = round(book.trim.width)
    height = round(book.trim.height)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        # The mimetype comes first, stored, as the container format asks.
        archive.writestr(
            zipfile.ZipInfo("mimetype"), "application/epub+zip", compress_type=zipfile.ZIP_STORED
        )
        archive.writestr("META-INF/container.xml", CONTAINER)
        archive.writestr("OEBPS/book.css", STYLESHEET.read_text() + PAGE_CSS)
        items.append(("css", "book.css", "text/css", ""))
        for name, file in FACES.values():
            archive.write(FONTS / file, f"OEBPS/fonts/{file}")
            items.append((name, f"fonts/{file}", "application/vnd.ms-opentype", ""))
        done = 0
        for printed in sheets_of(project, book, book_pages):
            sheet = printed.sheet
            page_id = f"p{sheet.number:04d}"
            if printed.shows_picture:
                if printed.picture is not None and printed.picture.image:
                    image = f"images/{page_id}.jpg"
                    archive.writestr(f"OEBPS/{image}", _jpeg(printed.picture.image.name))
                    items.append((f"i{sheet.number:04d}", image, "image/jpeg", ""))
                    printed.href = image
                else:
                    report.missing += 1
            xhtml = render_to_string(
                "studio/epub_page.xhtml",
                {"printed": printed, "width": width, "height": height, "title": project.title},
            )
            archive.writestr(f"OEBPS/{page_id}.xhtml", xhtml)
            items.append((page_id, f"{page_id}.xhtml", "application/xhtml+xml", "svg"))
            spine.append((page_id, f"page-spread-{sheet.side}"))
            if printed.role == "title":
                toc.append((f"{page_id}.xhtml", project.title))
            elif printed.page is not None and printed.sheet.number == book.first_sheet(
                printed.sheet.index
            ):
                toc.append((f"{page_id}.xhtml", f"Page {printed.page.number}"))
                done += 1
                progress(done)
        archive.writestr(
            "OEBPS/nav.xhtml",
            render_to_string(
                "studio/epub_nav.xhtml",
                {
                    "title": project.title,
                    "toc": toc,
                },
            ),
        )
        items.append(("nav", "nav.xhtml", "application/xhtml+xml", "nav"))
        archive.writestr(
            "OEBPS/content.opf",
            render_to_string(
                "studio/epub_package.opf",
                {
                    "identifier": identifier,
                    "title": project.title,
                    "author": project.author,
                    "modified": timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "items": items,
                    "spine": spine,
                },
            ),
        )
    return report


def _jpeg(name: str) -> bytes:
    with default_storage.open(name, "rb") as source, Image.open(source) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=88)
        return buffer.getvalue()


CONTAINER = """<?xml version="1.0" encoding="UTF-8"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles>
    <rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>
  </rootfiles>
</container>
"""
