"""The printed book, sheet by sheet: what each printed page of a project shows (its picture,
its text set in lines, or why it has no picture yet), placed by studio.geometry. The book
preview shows it one spread at a time; the PDFs and the EPUB draw the same sheets.
"""

from dataclasses import dataclass
from functools import cached_property

from generation import catalogue, selectors
from generation.models import ACTIVE_STATUSES, Illustration, Upscale

from .geometry import PRINT_DPI, Book, Role, Sheet, Trim, parse_trim
from .models import Page, Project
from .review import url_for
from .typeset import FOLIO_SIZE, Line, Setting, centred, set_text, set_title


@dataclass
class PrintedSheet:
    """One printed page with what it shows."""

    sheet: Sheet
    page: Page | None = None
    picture: Illustration | None = None  # the page's current (complete) picture
    latest: Illustration | None = None  # its latest job, whatever its status
    heading: str = ""  # the section the page opens, if any
    title: str = ""
    author: str = ""
    href: str = ""  # where the picture is read from: the preview's address unless set

    @property
    def label(self) -> str:
        """What the page shows, in words (the preview's and the EPUB's label for it)."""
        if self.role == Role.TITLE:
            return f"Title page: {self.title}"
        if self.page is None:
            return "Blank page"
        what = {Role.PICTURE: "picture", Role.TEXT: "text"}.get(self.role, "picture and text")
        return f"Page {self.page.number}, {what}"

    @property
    def picture_href(self) -> str:
        return self.href or self.picture_url

    @property
    def note_x(self) -> float:
        box = self.sheet.picture
        return box.x + box.width / 2 if box else 0.0

    @property
    def note_y(self) -> float:
        box = self.sheet.picture
        return box.y + box.height / 2 if box else 0.0

    @property
    def role(self) -> str:
        return self.sheet.role

    @cached_property
    def setting(self) -> Setting | None:
        sheet = self.sheet
        if sheet.role == Role.TITLE:
            return set_title(self.title, self.author, sheet.text)
        if sheet.text is None or self.page is None:
            return None
        return set_text(
            self.page.text, sheet.text, heading=self.heading, middle=sheet.role == Role.TEXT
        )

    @property
    def folio(self) -> Line | None:
        if self.page is None or self.sheet.folio_y is None:
            return None
        return centred(
            str(self.page.number), self.sheet.folio_x, self.sheet.folio_y, "regular", FOLIO_SIZE
        )

    @property
    def shows_picture(self) -> bool:
        return self.sheet.picture is not None

    @cached_property
    def picture_url(self) -> str:
        return url_for("illustration-image", self.picture.pk) if self.picture else ""

    @property
    def pixels(self) -> tuple[int, int] | None:
        return pixels_of(self.picture) if self.picture else None

    @property
    def dpi(self) -> int | None:
        """The picture's effective resolution at its printed size, on a picture sheet."""
        if not self.shows_picture or not self.pixels:
            return None
        return self.sheet.picture.dpi(self.pixels)

    @property
    def low_resolution(self) -> bool:
        return self.dpi is not None and self.dpi < PRINT_DPI

    @property
    def missing_note(self) -> str:
        """Return why the page has no picture yet, in an editor's words."""
        job = self.latest
        if job is not None and job.is_active:
            return "No illustration yet: it is on its way"
        if job is not None and job.status == Illustration.Status.FAILED:
            return "No illustration yet: the last try failed"
        return "No illustration yet"


# How the report names the services an upscale went through.
SERVICE_LABELS = {"replicate": "Replicate", "fal": "fal"}


def print_upscales(project: Project) -> dict[int, Upscale]:
    """Return the upscale each current picture of the project prints from, by the picture's
    id: its latest complete one (the print export's upscale step); pictures without one
    print from their own pixels."""
    upscales = (
        Upscale.objects.filter(
            page__project=project,
            status=Upscale.Status.COMPLETE,
            source__status=Illustration.Status.COMPLETE,
        )
        .exclude(image="")
        .select_related("page")  # the export page names each upscale's page
        .order_by("pk")
    )
    return {upscale.source_id: upscale for upscale in upscales}


def pixels_of(job: Illustration) -> tuple[int, int] | None:
    """Return a picture's size in pixels: as recorded, else as asked for ("1024x1024")."""
    if job.width and job.height:
        return job.width, job.height
    width, _, height = (job.size or "").partition("x")
    if width.isdigit() and height.isdigit():
        return int(width), int(height)
    return None


@dataclass
class Spread:
    number: int  # 1-based
    count: int  # spreads in the book
    sheets: list[PrintedSheet | None]  # left, right; None: nothing faces there
    book: Book

    @property
    def page_numbers(self) -> list[int]:
        """The book pages this spread shows, in order, once each."""
        numbers = [s.page.number for s in self.sheets if s is not None and s.page is not None]
        return sorted(set(numbers))

    @property
    def where(self) -> str:
        numbers = self.page_numbers
        if not numbers:
            return "title page" if self.number == 1 else "blank page"
        if len(numbers) == 1:
            return f"page {numbers[0]}"
        return f"pages {numbers[0]}–{numbers[-1]}"

    @property
    def previous(self) -> int | None:
        return self.number - 1 if self.number > 1 else None

    @property
    def next(self) -> int | None:
        return self.number + 1 if self.number < self.count else None


def project_trim(project: Project, asked: str | None = None) -> Trim:
    """Return the trim to show: the one asked for, else the project's; ValueError for a
    trim that is no preset nor WxH."""
    return parse_trim(asked or project.trim)


def book_of(project: Project, trim: Trim, *, bleed: bool = True) -> Book:
    return Book(trim=trim, pages=project.pages.count(), bleed=bleed)


def spread_of(project: Project, number: int, trim: Trim) -> Spread:
    """Return spread `number` (1-based) of the project's printed book at `trim`, in a
    constant number of queries; ValueError if the book has no such spread."""
    book = book_of(project, trim)
    numbers = book.spread(number)
    sheets = [book.sheet(n) if n else None for n in numbers]
    indexes = [s.index for s in sheets if s is not None and s.index is not None]
    pages: dict[int, Page] = {}
    previous_section = ""
    if indexes:
        first = min(indexes)
        window = list(project.pages.order_by("number")[max(0, first - 1) : max(indexes) + 1])
        if first > 0:
            previous_section = window.pop(0).section
        pages = {first + i: page for i, page in enumerate(window)}
    latest, current = selectors.latest_and_current(Illustration, [p.pk for p in pages.values()])
    printed = []
    for sheet in sheets:
        if sheet is None:
            printed.append(None)
            continue
        page = pages.get(sheet.index) if sheet.index is not None else None
        heading = ""
        if page is not None and page.section:
            before = pages.get(sheet.index - 1)
            before_section = before.section if before is not None else previous_section
            heading = page.section if page.section != before_section else ""
        printed.append(
            PrintedSheet(
                sheet=sheet,
                page=page,
                picture=current.get(page.pk) if page else None,
                latest=latest.get(page.pk) if page else None,
                heading=heading,
                title=project.title,
                author=project.author,
            )
        )
    return Spread(number=number, count=book.spread_count, sheets=printed, book=book)


@dataclass(frozen=True)
class LowPage:
    number: int  # the book page
    pixels: tuple[int, int]
    dpi: int
    page_id: int = 0
    upscaling: bool = False  # an upscale of its picture is on its way
    # The upscale its picture prints from, when even that prints under 300 DPI.
    upscaled: tuple[int, int] | None = None

    @property
    def line(self) -> str:
        width, height = self.pixels
        line = f"Page {self.number}: {width} × {height} px, {self.dpi} DPI"
        if self.upscaled:
            line += f"; upscaled to {self.upscaled[0]} × {self.upscaled[1]} px, still under 300"
        elif self.upscaling:
            line += " (being upscaled)"
        return line


@dataclass(frozen=True)
class UpscaledPage:
    number: int
    scale: int
    provider: str
    model: str
    pixels: tuple[int, int]
    dpi: int

    @property
    def line(self) -> str:
        width, height = self.pixels
        by = SERVICE_LABELS.get(self.provider, self.provider)
        return (
            f"Page {self.number}: upscaled ×{self.scale} by {by} {self.model} to "
            f"{width} × {height} px, {self.dpi} DPI"
        )


@dataclass(frozen=True)
class Resolution:
    """How a project's pictures print at a trim: the pages under 300 DPI, the pages that
    print from their upscale, and the book's number of pages."""

    low: list[LowPage]
    upscaled: list[UpscaledPage]
    pages: int


def print_resolution(project: Project, trim: Trim) -> Resolution:
    """Return the pages whose current picture prints under 300 DPI at `trim` and those that
    print from their upscale (the print export's upscale step), from the pictures' recorded
    sizes: the pictures and their upscales are read once for both lists, and no picture
    file is opened."""
    book = book_of(project, trim)
    if book.pages == 0:
        return Resolution(low=[], upscaled=[], pages=0)
    # Every picture sheet of a book has the same picture box: the first one's serves all.
    box = book.sheet(book.first_sheet(0)).picture
    jobs = Illustration.objects.filter(
        page__project=project, status=Illustration.Status.COMPLETE
    ).select_related("page")
    upscales = print_upscales(project)
    upscaling = set(
        Upscale.objects.filter(page__project=project, status__in=ACTIVE_STATUSES).values_list(
            "source_id", flat=True
        )
    )
    low = []
    for job in sorted(jobs, key=lambda job: job.page.number):
        pixels = pixels_of(job)
        if not pixels or box.dpi(pixels) >= PRINT_DPI:
            continue
        upscale = upscales.get(job.pk)
        bigger = (upscale.width, upscale.height) if upscale and upscale.width else None
        if bigger and box.dpi(bigger) >= PRINT_DPI:
            continue  # it prints from its upscale (in `upscaled`)
        low.append(
            LowPage(
                job.page.number,
                pixels,
                box.dpi(pixels),
                page_id=job.page_id,
                upscaling=job.pk in upscaling,
                upscaled=bigger,
            )
        )
    upscaled = [
        UpscaledPage(
            number=upscale.page.number,
            scale=upscale.scale,
            provider=upscale.provider,
            model=catalogue.canonical(upscale.provider, upscale.model),
            pixels=(upscale.width, upscale.height),
            dpi=box.dpi((upscale.width, upscale.height)),
        )
        for upscale in upscales.values()
        if upscale.width
    ]
    upscaled.sort(key=lambda page: page.number)
    return Resolution(low=low, upscaled=upscaled, pages=book.pages)


def low_resolution_pages(project: Project, trim: Trim) -> list[LowPage]:
    """Return the pages whose current picture prints under 300 DPI at `trim`."""
    return print_resolution(project, trim).low


def needed_pixels(trim: Trim, pages: int) -> tuple[int, int]:
    """Return the pixels a picture needs to print at 300 DPI on the book's picture pages."""
    book = Book(trim=trim, pages=max(pages, 1))
    box = book.sheet(book.first_sheet(0)).picture
    return round(box.width / 72 * PRINT_DPI), round(box.height / 72 * PRINT_DPI)
