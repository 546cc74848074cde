"""The review page's cards: what each page shows and the links it offers.

The queries live in generation.selectors; this module only shapes their answers for the
templates.
"""

import functools
from dataclasses import dataclass
from functools import cached_property

from django.conf import settings
from django.urls import reverse

from generation import selectors
from generation.models import Clip, Illustration

from .models import Page, Project

Status = Illustration.Status
_PLACEHOLDER = 987654321


@functools.cache
def _url_pattern(name: str) -> str:
    return reverse(name, args=[_PLACEHOLDER])


def url_for(name: str, pk: int) -> str:
    """Return reverse(name, args=[pk]) for the review page's many per-card links, without
    resolving the URLconf once per link (a 500-page review page has thousands)."""
    return _url_pattern(name).replace(str(_PLACEHOLDER), str(pk))


class CardUrls:
    """The links of one card."""

    def __init__(self, card: "PageCard"):
        self.card = card

    @property
    def image(self) -> str:
        return url_for("illustration-image", self.card.current.pk)

    @property
    def thumbnail(self) -> str:
        return url_for("illustration-thumbnail", self.card.current.pk)

    @property
    def clip(self) -> str:
        return url_for("clip-video", self.card.clip.pk)

    @property
    def make_clip(self) -> str:
        return url_for("page-clip", self.card.page.pk)

    @property
    def retry(self) -> str:
        return url_for("page-retry", self.card.page.pk)

    @property
    def next(self) -> str:
        return url_for("page-next", self.card.page.pk)

    @property
    def regenerate(self) -> str:
        return url_for("page-regenerate", self.card.page.pk)

    @property
    def prompt(self) -> str:
        return url_for("page-prompt", self.card.page.pk)

    @property
    def history(self) -> str:
        return url_for("page-history", self.card.page.pk)


@dataclass
class PageCard:
    page: Page
    job: Illustration | None  # the latest job, whatever its status
    current: Illustration | None  # the complete illustration shown as the picture
    latest_run_id: int | None = None
    clip_job: Clip | None = None  # the latest clip job
    clip: Clip | None = None  # the complete clip, played on the card

    @property
    def clip_state(self) -> str:
        """Return "" (no clip asked for), the active clip job's status, complete or failed."""
        if self.clip_job is not None and self.clip_job.is_active:
            return self.clip_job.status
        if self.clip is not None:
            return "complete"
        if self.clip_job is not None and self.clip_job.status == Status.FAILED:
            return "failed"
        return ""

    @cached_property
    def urls(self) -> CardUrls:
        return CardUrls(self)

    @cached_property
    def state(self) -> str:
        """Return what the card shows: the active job's status, else complete, else why not."""
        if self.job is not None and self.job.is_active:
            return self.job.status
        if self.current is not None:
            if selectors.is_outdated(self.page, self.current):
                return "outdated"  # offered for regeneration, never redrawn silently
            if self.latest_run_id and self.current.run_id != self.latest_run_id:
                return "exists"  # kept from an earlier run
            return "complete"
        if self.job is not None and self.job.status == Status.FAILED:
            return "rejected" if self.job.failure_reason == "rejected" else "failed"
        return "pending"

    @property
    def attempt_number(self) -> int:
        return (self.job.attempts_made if self.job else 0) + 1

    @property
    def max_attempts(self) -> int:
        return settings.STUDIO_MAX_ATTEMPTS


def page_cards(project: Project, *, pages=None) -> list[PageCard]:
    """Return one card per page (or per given page), in a constant number of queries."""
    pages = list(pages if pages is not None else project.pages.all())
    if not pages:
        return []
    for page in pages:
        page.project = project  # the cards compose prompts: no query per page
    page_ids = [p.pk for p in pages]
    # "Exists" means kept from before the latest run that drew pictures (a run that only
    # made clips leaves the pictures as they were).
    latest_run_id = selectors.latest_illustration_run_id(project)
    latest_job, current = selectors.latest_and_current(Illustration, page_ids)
    latest_clip, current_clip = selectors.latest_and_current(Clip, page_ids)
    return [
        PageCard(
            page=p,
            job=latest_job.get(p.pk),
            current=current.get(p.pk),
            latest_run_id=latest_run_id,
            clip_job=latest_clip.get(p.pk),
            clip=current_clip.get(p.pk),
        )
        for p in pages
    ]
