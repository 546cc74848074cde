"""Changes to projects and pages. Page numbers always stay 1..N without gaps."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Max
from django.db.models.functions import Now

from . import files
from .models import MAX_PAGES, Page, Project

# Renumbering first moves pages far out of the way, so the unique (project, number)
# constraint never sees two pages on one number, whatever order the rows update in.
RENUMBER_OFFSET = 1_000_000


class TooManyPages(ValueError):
    """A project would hold more than MAX_PAGES pages; the message says so, for the editor."""


def _too_many(count: int) -> TooManyPages:
    return TooManyPages(
        f"A project can have at most {MAX_PAGES:,} pages; this one would have {count:,}."
    )


class TooManyProjects(ValueError):
    """The editor owns STUDIO_PROJECTS_PER_EDITOR projects already; the message says so."""


@transaction.atomic
def create_project(*, owner, title: str, style_guide: str = "", pages=()) -> Project:
    """Create a project with the given pages, numbered from 1: page texts, or
    ManuscriptPage (text, section) pairs. TooManyPages past MAX_PAGES; TooManyProjects
    when the owner has as many projects as one editor may."""
    pages = list(pages)
    if len(pages) > MAX_PAGES:
        raise _too_many(len(pages))
    # The owner's row first: two requests at once cannot both take the last place.
    get_user_model().objects.select_for_update().filter(pk=owner.pk).exists()
    cap = settings.STUDIO_PROJECTS_PER_EDITOR
    if Project.objects.filter(owner=owner).count() >= cap:
        raise TooManyProjects(
            f"You have {cap:,} projects, the most one editor may have; delete one to make "
            "room for another."
        )
    project = Project.objects.create(owner=owner, title=title.strip(), style_guide=style_guide)
    Page.objects.bulk_create(
        Page(project=project, number=n, **_text_and_section(page))
        for n, page in enumerate(pages, 1)
    )
    return project


def _text_and_section(page) -> dict:
    if isinstance(page, str):
        return {"text": page}
    return {"text": page.text, "section": page.section}


@transaction.atomic
def delete_project(*, project: Project) -> None:
    """Delete a project with its pages, jobs, history and exports; once that commits, delete
    every file it stored: the ones its rows name and whatever else is in its folders."""
    names = files.owned_files(project=project)
    folders = files.project_folders(project.pk)
    project.delete()
    files.delete_after_commit(names, folders=folders)


def _renumber(project: Project, pages: list[Page]) -> None:
    for page in pages:
        page.number += RENUMBER_OFFSET
    Page.objects.bulk_update(pages, ["number"])
    for number, page in enumerate(pages, 1):
        page.number = number
    Page.objects.bulk_update(pages, ["number"])


@transaction.atomic
def add_page(
    *, project: Project, text: str, after: Page | None = None, label: str = "", section: str = ""
) -> Page:
    """Add a page after the given one (or at the end) and renumber the rest. TooManyPages
    when the project already holds MAX_PAGES."""
    Project.objects.select_for_update().filter(pk=project.pk).first()
    last = project.pages.aggregate(n=Max("number"))["n"] or 0
    if last >= MAX_PAGES:
        raise _too_many(last + 1)
    page = Page.objects.create(
        project=project, number=last + 1, text=text, label=label, section=section
    )
    if after is not None:
        pages = [p for p in project.pages.order_by("number") if p.pk != page.pk]
        position = next(i for i, p in enumerate(pages) if p.pk == after.pk) + 1
        pages.insert(position, page)
        _renumber(project, pages)
    return page


@transaction.atomic
def remove_page(*, page: Page) -> None:
    """Delete a page with its illustrations and clips, close the gap in the numbering, and
    once that commits delete their files: every version of the picture, thumbnails, clips."""
    project = page.project
    Project.objects.select_for_update().filter(pk=project.pk).first()
    names = files.owned_files(pages=[page])
    page.delete()
    files.delete_after_commit(names)
    _renumber(project, list(project.pages.order_by("number")))


@transaction.atomic
def move_page(*, page: Page, by: int) -> bool:
    """Move a page up (by < 0) or down (by > 0). Return whether it moved."""
    project = page.project
    Project.objects.select_for_update().filter(pk=project.pk).first()
    pages = list(project.pages.order_by("number"))
    index = next(i for i, p in enumerate(pages) if p.pk == page.pk)
    target = max(0, min(len(pages) - 1, index + by))
    if target == index:
        return False
    pages.insert(target, pages.pop(index))
    _renumber(project, pages)
    return True


class PageOrderError(ValueError):
    """An order the studio will not apply; the message says why, for the editor."""


@transaction.atomic
def reorder_pages(*, project: Project, order: list[int]) -> None:
    """Number the project's pages 1..N in the given order of page ids, which must name
    every page of the project exactly once (else PageOrderError, and nothing changes)."""
    Project.objects.select_for_update().filter(pk=project.pk).first()
    pages = {page.pk: page for page in project.pages.order_by("number")}
    if len(set(order)) != len(order):
        raise PageOrderError("The new order names a page twice.")
    if set(order) != set(pages):
        raise PageOrderError(
            "The new order does not name exactly this project's pages; "
            "they changed in the meantime. Reload the page and move it again."
        )
    if order == list(pages):
        return
    _renumber(project, [pages[pk] for pk in order])


@transaction.atomic
def start_export(
    *,
    project: Project,
    format: str,
    page_size: str = "a4",
    trim: str = "",
    paper: str = "",
    resample: bool = False,
):
    """Queue an export of the project; return it. The print files and the EPUB are drawn at
    `trim` on `paper` (the project's when not given). It goes to a worker at once if its
    editor has fewer than STUDIO_EXPORTS_PER_EDITOR exports running, else when one finishes
    (the editor's waiting exports start oldest first)."""
    from .models import Export
    from .tasks import start_waiting_exports

    export = Export.objects.create(
        project=project,
        format=format,
        page_size=page_size,
        trim=trim or project.trim,
        paper=paper or project.paper,
        resample=resample,
    )
    transaction.on_commit(lambda: start_waiting_exports(owner_id=project.owner_id))
    return export


def choose_cover_source(*, project: Project, source: str | None) -> None:
    """Set where the front cover's picture comes from: "page" (the chosen page's picture)
    or "generated" (the cover's own); ValueError saying which are accepted otherwise."""
    if source not in Project.CoverSource.values:
        raise ValueError(f"source must be one of {', '.join(Project.CoverSource.values)}.")
    Project.objects.filter(pk=project.pk).update(cover_source=source, updated_at=Now())
    project.cover_source = source
