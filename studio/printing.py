"""The PDFs: the book to read on screen, the print-ready interior and the wraparound cover,
all drawn from the sheets of studio.book as studio.geometry places them.

The print interior is full bleed the way print-on-demand services ask for it (KDP): each
page 0.125 in wider than the trim on its outside edge and 0.25 in taller, pictures run into
the bleed, its TrimBox and BleedBox set; no crop marks, annotations or bookmarks; the face
embedded. Its resolution report lists the pages whose pictures print under 300 DPI.
"""

import itertools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from django.core.files.storage import default_storage
from PIL import Image, ImageOps, ImageStat

from generation import catalogue
from generation.models import CoverJob, Illustration, Upscale

from .book import SERVICE_LABELS, PrintedSheet, print_upscales
from .geometry import INCH, PRINT_DPI, Book, Box, Cover, Role, Trim
from .models import Export, Project
from .typeset import Line, font_name, set_text, text_width

PDF_IMAGE_SIDE = 1600  # pixels, the longer side: plenty for a screen, light in the file
PDF_PART_PAGES = 25  # book pages drawn into one part before it is saved to disk


def new_canvas(path: Path, **options):
    """Return a reportlab canvas that starts each page in the book face: by default it
    starts in Helvetica, which it never embeds, and so would name a font the file lacks."""
    from reportlab.pdfgen.canvas import Canvas

    return Canvas(str(path), pageCompression=1, initialFontName=font_name("regular"), **options)


@dataclass
class Report:
    """What the export tells about the file: pages under 300 DPI, text that did not fit."""

    entries: list[dict] = field(default_factory=list)
    missing: int = 0

    def low(self, *, page: int | str, pixels, dpi: int, resampled: bool) -> None:
        self.entries.append(
            {"page": page, "pixels": list(pixels), "dpi": dpi, "resampled": resampled}
        )

    def upscaled(self, *, page: int | str, pixels, dpi: int, upscale: Upscale) -> None:
        """A picture printed from its upscale (the print export's upscale step)."""
        self.entries.append(
            {
                "page": page,
                "pixels": list(pixels),
                "dpi": dpi,
                "resampled": False,
                "upscaled": {
                    "scale": upscale.scale,
                    "provider": upscale.provider,
                    "model": catalogue.canonical(upscale.provider, upscale.model),
                },
            }
        )

    def cut(self, *, page: int, lines: int) -> None:
        self.entries.append({"page": page, "cut_lines": lines})


def report_lines(entries: list[dict], *, trim_label: str = "") -> list[str]:
    """Return the report in words, one line per page under 300 DPI (and per page whose text
    did not fit)."""
    lines = []
    for entry in entries:
        where = entry["page"] if isinstance(entry["page"], str) else f"Page {entry['page']}"
        if "cut_lines" in entry:
            lines.append(
                f"{where}: {entry['cut_lines']} line(s) of text do not fit and are left out"
            )
            continue
        width, height = entry["pixels"]
        if upscaled := entry.get("upscaled"):
            by = SERVICE_LABELS.get(upscaled["provider"], upscaled["provider"])
            line = (
                f"{where}: upscaled ×{upscaled['scale']} by {by} {upscaled['model']} "
                f"({width} × {height} px), prints at {entry['dpi']} DPI"
            )
            if entry["dpi"] < PRINT_DPI:
                line += " (still under 300)"
            lines.append(line)
            continue
        line = f"{where}: {width} × {height} px prints at {entry['dpi']} DPI (under 300)"
        if entry["resampled"]:
            line += "; resampled locally to 300 DPI (Lanczos: smoother, no added detail)"
        lines.append(line)
    return lines


def is_low(entry: dict) -> bool:
    """Whether a report entry is a picture that prints under 300 DPI."""
    return "dpi" in entry and entry["dpi"] < PRINT_DPI


def sheets_of(project: Project, book: Book, book_pages) -> "itertools.chain":
    """Yield the book's printed sheets in order: the title page, each book page's sheet or
    sheets (from `book_pages`, studio.export's chunked reader), and a closing blank page."""

    def body():
        yield PrintedSheet(sheet=book.sheet(1), title=project.title, author=project.author)
        last = 1
        for index, item in enumerate(book_pages):
            first = book.first_sheet(index)
            numbers = (first, first + 1) if book.trim.facing else (first,)
            for number in numbers:
                last = number
                yield PrintedSheet(
                    sheet=book.sheet(number),
                    page=item.page,
                    picture=item.illustration,
                    heading=item.page.section if item.starts_section else "",
                )
        for number in range(last + 1, book.sheet_count + 1):
            yield PrintedSheet(sheet=book.sheet(number))

    return body()


def build_book_pdf(
    export: Export, path: Path, *, book: Book, book_pages, progress, resample: bool = False
) -> Report:
    """Write the book's sheets to a PDF, a part of PDF_PART_PAGES sheets at a time (each
    saved to disk, then joined by pikepdf, which copies their streams from disk as it
    writes: memory stays flat however long the book), and set each page's TrimBox and
    BleedBox. Return the report."""
    import pikepdf

    project = export.project
    report = Report()
    upscales = print_upscales(project) if book.bleed else {}
    sheets = sheets_of(project, book, book_pages)
    with tempfile.TemporaryDirectory(prefix="studio-pdf-") as work:
        parts, done = [], 0
        while True:
            chunk = list(itertools.islice(sheets, PDF_PART_PAGES))
            if not chunk:
                break
            part = Path(work) / f"part-{len(parts):04d}.pdf"
            _draw_sheets(
                part,
                chunk,
                Path(work),
                report,
                print_ready=book.bleed,
                resample=resample,
                upscales=upscales,
            )
            parts.append(part)
            done += sum(1 for s in chunk if s.page is not None and s.role != Role.TEXT)
            progress(done)
        with pikepdf.Pdf.new() as joined:
            sources = [pikepdf.Pdf.open(part) for part in parts]
            try:
                for source in sources:
                    joined.pages.extend(source.pages)
                for number, page in enumerate(joined.pages, 1):
                    sheet = book.sheet(number)
                    page.obj.TrimBox = pikepdf.Array(sheet.trim.pdf(sheet.height))
                    page.obj.BleedBox = pikepdf.Array(sheet.bleed.pdf(sheet.height))
                joined.docinfo["/Title"] = project.title
                if project.author:
                    joined.docinfo["/Author"] = project.author
                # Viewers open it as a book: the title page alone, then facing pages.
                joined.Root.PageLayout = pikepdf.Name.TwoPageRight
                joined.save(path)
            finally:
                for source in sources:
                    source.close()
    return report


def _draw_sheets(
    path: Path, chunk, work: Path, report: Report, *, print_ready, resample, upscales=None
):
    canvas = new_canvas(path)
    for printed in chunk:
        sheet = printed.sheet
        canvas.setPageSize((sheet.width, sheet.height))
        if printed.shows_picture:
            if printed.picture is not None and printed.picture.image:
                _draw_picture(
                    canvas,
                    printed,
                    work,
                    report,
                    print_ready=print_ready,
                    resample=resample,
                    upscale=(upscales or {}).get(printed.picture.pk),
                )
            else:
                report.missing += 1
                _draw_placeholder(canvas, printed)
        setting = printed.setting
        if setting is not None:
            _draw_lines(canvas, sheet.height, setting.lines)
            if setting.cut and printed.page is not None:
                report.cut(page=printed.page.number, lines=setting.cut)
        if printed.folio is not None:
            canvas.setFillGray(0.35)
            _draw_lines(canvas, sheet.height, [printed.folio])
            canvas.setFillGray(0)
        canvas.showPage()
    canvas.save()


def _draw_lines(canvas, sheet_height: float, lines) -> None:
    for line in lines:
        canvas.setFont(font_name(line.face), line.size)
        canvas.drawString(line.x, sheet_height - line.y, line.text)


def prepared_picture(
    job: Illustration | Upscale, box: Box, target: Path, *, print_ready: bool, resample: bool
) -> tuple[tuple[int, int], int, bool]:
    """Crop the picture to the box's shape (centred, as the preview's SVG does) into a JPEG
    at `target`: at its own pixels for print (resampled to 300 DPI when asked and under it),
    at most PDF_IMAGE_SIDE for the screen. Return its pixels, its DPI, whether resampled."""
    with default_storage.open(job.image.name, "rb") as source, Image.open(source) as image:
        pixels = image.size
        dpi = box.dpi(pixels)
        scale = min(pixels[0] / box.width, pixels[1] / box.height)  # pixels a point
        resampled = False
        if not print_ready:
            scale = min(scale, PDF_IMAGE_SIDE / max(box.width, box.height))
        elif resample and dpi < PRINT_DPI:
            scale, resampled = PRINT_DPI / INCH, True
        size = (max(1, round(box.width * scale)), max(1, round(box.height * scale)))
        fitted = ImageOps.fit(image.convert("RGB"), size, method=Image.Resampling.LANCZOS)
        fitted.save(target, format="JPEG", quality=92 if print_ready else 85)
    return pixels, dpi, resampled


def _draw_picture(
    canvas, printed: PrintedSheet, work: Path, report, *, print_ready, resample, upscale=None
):
    """Draw the page's picture in its box: for print, from its upscale when it has one (the
    report says so), noting a picture under 300 DPI."""
    box, sheet = printed.sheet.picture, printed.sheet
    target = work / f"picture-{sheet.number}.jpg"
    pixels, dpi, resampled = prepared_picture(
        upscale or printed.picture, box, target, print_ready=print_ready, resample=resample
    )
    if print_ready and upscale is not None:
        report.upscaled(page=printed.page.number, pixels=pixels, dpi=dpi, upscale=upscale)
    elif print_ready and dpi < PRINT_DPI:
        report.low(page=printed.page.number, pixels=pixels, dpi=dpi, resampled=resampled)
    x0, y0, x1, y1 = box.pdf(sheet.height)
    canvas.drawImage(str(target), x0, y0, x1 - x0, y1 - y0)
    target.unlink()


def _draw_placeholder(canvas, printed: PrintedSheet) -> None:
    sheet = printed.sheet
    x0, y0, x1, y1 = sheet.picture.pdf(sheet.height)
    canvas.setFillGray(0.93)
    canvas.rect(x0, y0, x1 - x0, y1 - y0, stroke=0, fill=1)
    canvas.setFillGray(0.4)
    canvas.setFont(font_name("italic"), 16)
    note = f"Page {printed.page.number}: no illustration yet"
    canvas.drawCentredString(printed.note_x, sheet.height - printed.note_y, note)
    canvas.setFillGray(0)


# --- the wraparound cover ---------------------------------------------------------------


def generated_cover(project: Project) -> CoverJob | None:
    """Return the project's generated cover: its latest complete cover job with a picture."""
    return (
        CoverJob.objects.filter(project=project, status=CoverJob.Status.COMPLETE)
        .exclude(image="")
        .order_by("-finished_at", "-pk")
        .first()
    )


def cover_picture(project: Project) -> Illustration | CoverJob | None:
    """Return the front cover's picture: the generated cover when the project chose it and
    has one; else the chosen page's, else the first page's that has one."""
    if project.cover_source == Project.CoverSource.GENERATED:
        generated = generated_cover(project)
        if generated is not None:
            return generated
    return page_cover_picture(project)


def page_cover_picture(project: Project) -> Illustration | None:
    """Return the chosen page's picture, else the first page's that has one."""
    pictures = Illustration.objects.filter(
        page__project=project, status=Illustration.Status.COMPLETE
    ).exclude(image="")
    if project.cover_page:
        chosen = pictures.filter(page__number=project.cover_page).first()
        if chosen is not None:
            return chosen
    return pictures.order_by("page__number").first()


def build_cover(export: Export, path: Path, *, trim: Trim, pages: int, resample: bool) -> Report:
    """Write the wraparound cover: back, spine and front, 0.125 in bleed on every edge; the
    front the chosen page's picture with the title and author; the spine's text only from
    79 pages. Return the report (the front picture's resolution). The front's picture is
    the project's generated cover when it chose that (and one is drawn), else a page's."""
    import pikepdf

    project = export.project
    cover = Cover(trim=trim, pages=pages, paper=export.paper)
    report = Report()
    picture = cover_picture(project)
    with tempfile.TemporaryDirectory(prefix="studio-cover-") as work:
        drawn = Path(work) / "cover.pdf"
        canvas = new_canvas(drawn, pagesize=(cover.width, cover.height))
        ground = (0.36, 0.42, 0.33)
        front = cover.front
        if picture is not None:
            target = Path(work) / "front.jpg"
            # An upscale is of a page's picture (keyed by its id): never of a generated cover.
            upscale = (
                print_upscales(project).get(picture.pk)
                if isinstance(picture, Illustration)
                else None
            )
            pixels, dpi, resampled = prepared_picture(
                upscale or picture, front, target, print_ready=True, resample=resample
            )
            with Image.open(target) as fitted:
                mean = ImageStat.Stat(fitted).mean
            ground = tuple(0.6 * channel / 255 for channel in mean[:3])  # a darker shade
            if upscale is not None:
                report.upscaled(
                    page=f"Cover (page {picture.page.number})",
                    pixels=pixels,
                    dpi=dpi,
                    upscale=upscale,
                )
            elif dpi < PRINT_DPI:
                report.low(
                    page="Cover (its generated picture)"
                    if isinstance(picture, CoverJob)
                    else f"Cover (page {picture.page.number})",
                    pixels=pixels,
                    dpi=dpi,
                    resampled=resampled,
                )
        canvas.setFillColorRGB(*ground)
        canvas.rect(0, 0, cover.width, cover.height, stroke=0, fill=1)
        if picture is not None:
            x0, y0, x1, y1 = front.pdf(cover.height)
            canvas.drawImage(str(target), x0, y0, x1 - x0, y1 - y0)
        _draw_cover_title(canvas, project, cover)
        if cover.spine_text:
            _draw_spine(canvas, project, cover)
        canvas.showPage()
        canvas.save()
        with pikepdf.Pdf.open(drawn) as pdf:
            page = pdf.pages[0]
            page.obj.TrimBox = pikepdf.Array(cover.trim_box.pdf(cover.height))
            page.obj.BleedBox = pikepdf.Array(
                Box(0, 0, cover.width, cover.height).pdf(cover.height)
            )
            pdf.docinfo["/Title"] = f"{project.title} (cover)"
            pdf.save(path)
    return report


def _draw_cover_title(canvas, project: Project, cover: Cover) -> None:
    """The title and the author on a pale band across the top of the front's safe area."""
    safe = cover.front_safe
    band = Box(safe.x, safe.y, safe.width, safe.height * 0.3).inset(left=12, right=12, top=12)
    lines = list(set_text(project.title, band, sizes=(40, 34, 28, 22, 18)).lines)
    if project.author:
        size = 16
        lines.append(
            Line(
                band.x,
                (lines[-1].y if lines else band.y) + 2 * size,
                project.author,
                "italic",
                size,
            )
        )
    bottom = (lines[-1].y if lines else band.y) + 14
    canvas.setFillColorRGB(1, 0.99, 0.96, alpha=0.85)
    x0, y0, x1, y1 = Box(safe.x, safe.y, safe.width, bottom - safe.y).pdf(cover.height)
    canvas.rect(x0, y0, x1 - x0, y1 - y0, stroke=0, fill=1)
    canvas.setFillColorRGB(0.16, 0.14, 0.12, alpha=1)
    _draw_lines(canvas, cover.height, lines)


def _draw_spine(canvas, project: Project, cover: Cover) -> None:
    """The title (and author) along the spine, read top to bottom, sized to fit its width
    less 0.0625 in each side."""
    spine = cover.spine_box
    words = f"{project.title}  ·  {project.author}" if project.author else project.title
    size = min(14.0, spine.width - 2 * 0.0625 * INCH)
    while size > 4 and text_width(words, "bold", size) > cover.trim.height - INCH:
        size -= 0.5
    canvas.saveState()
    canvas.translate(spine.x + spine.width / 2, cover.height / 2)
    canvas.rotate(-90)
    canvas.setFillColorRGB(1, 1, 1)
    canvas.setFont(font_name("bold"), size)
    canvas.drawCentredString(0, -size * 0.35, words)
    canvas.restoreState()
