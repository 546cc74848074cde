"""The book preview: the project as the spreads it will print, one spread at a time, with
missing pages shown as marked placeholders.

A spread is a pair of facing pages (1–2, 3–4, …); a book with an odd number of pages ends
on a spread whose right-hand page is blank.
"""

from dataclasses import dataclass
from functools import cached_property

from generation import selectors
from generation.models import Illustration

from .models import Export, Page, Project
from .review import url_for

PAGES_PER_SPREAD = 2


@dataclass
class PrintedPage:
    """One page of the book as it will print: its picture, or why it has none yet."""

    page: Page
    picture: Illustration | None  # the current (complete) picture
    latest: Illustration | None  # the latest job, whatever its status

    @cached_property
    def picture_url(self) -> str:
        return url_for("illustration-image", self.picture.pk) if self.picture else ""

    @property
    def missing_note(self) -> str:
        """Return why the page has no picture yet, in an editor's words."""
        job = self.latest
        if job is not None and job.is_active:
            return "No illustration yet: it is on its way"
        if job is not None and job.status == Illustration.Status.FAILED:
            return "No illustration yet: the last try failed"
        return "No illustration yet"


@dataclass
class Spread:
    number: int  # 1-based
    count: int  # spreads in the book
    pages: list[PrintedPage | None]  # left, right; None: a blank page

    @property
    def first_number(self) -> int:
        return (self.number - 1) * PAGES_PER_SPREAD + 1

    @property
    def last_number(self) -> int:
        return self.first_number + sum(1 for page in self.pages if page is not None) - 1

    @property
    def previous(self) -> int | None:
        return self.number - 1 if self.number > 1 else None

    @property
    def next(self) -> int | None:
        return self.number + 1 if self.number < self.count else None


def spread_count(pages: int) -> int:
    """Return how many spreads a book of `pages` pages has (at least one, even if empty)."""
    return max(1, -(-pages // PAGES_PER_SPREAD))


def spread_of(project: Project, number: int) -> Spread:
    """Return spread `number` (1-based) of the project's book, in a constant number of
    queries; ValueError if the book has no such spread."""
    count = spread_count(project.pages.count())
    if not 1 <= number <= count:
        raise ValueError(f"spread must be a number from 1 to {count}")
    first = (number - 1) * PAGES_PER_SPREAD + 1
    pages = {
        page.number: page
        for page in project.pages.filter(number__gte=first, number__lt=first + PAGES_PER_SPREAD)
    }
    latest, current = selectors.latest_and_current(Illustration, [p.pk for p in pages.values()])
    printed = [
        PrintedPage(page=page, picture=current.get(page.pk), latest=latest.get(page.pk))
        if (page := pages.get(n)) is not None
        else None
        for n in range(first, first + PAGES_PER_SPREAD)
    ]
    return Spread(number=number, count=count, pages=printed)


def page_size(project: Project, asked: str | None) -> str:
    """Return the page size to preview: the one asked for, else that of the project's
    latest export, else A4; ValueError for an unknown size."""
    if asked:
        if asked not in Export.PageSize.values:
            raise ValueError(f"size must be one of {', '.join(Export.PageSize.values)}")
        return asked
    latest = project.exports.order_by("-created_at").values_list("page_size", flat=True).first()
    return latest or Export.PageSize.A4
