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
from generation.clock import db_now
from generation.models import WORKING_STATUSES, Clip, Illustration

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


class _Link:
    """One link of a card: a named route, for the pk of the card's page, picture or clip."""

    def __init__(self, route: str, *, of: str = "page"):
        self.route, self.of = route, of

    def __get__(self, urls: "CardUrls | None", owner=None):
        if urls is None:
            return self
        return url_for(self.route, getattr(urls.card, self.of).pk)


class CardUrls:
    """The links of one card."""

    image = _Link("illustration-image", of="current")
    thumbnail = _Link("illustration-thumbnail", of="current")
    clip = _Link("clip-video", of="clip")
    make_clip = _Link("page-clip")
    retry = _Link("page-retry")
    next = _Link("page-next")
    regenerate = _Link("page-regenerate")
    prompt = _Link("page-prompt")
    history = _Link("page-history")

    def __init__(self, card: "PageCard"):
        self.card = card


@dataclass
class PageCard:
    page: Page
    job: Illustration | None  # the latest job, whatever its status
    current: Illustration | None  # the complete illustration shown as the picture
    latest_run_id: int | None = None
    clip_job: Clip | None = None  # the latest clip job
    clip: Clip | None = None  # the complete clip, played on the card
    # Its worker's lease ran out: the worker is gone and the sweep has not taken it back.
    stalled: bool = False

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
            if self.outdated_reason:
                return "outdated"  # offered for regeneration, never redrawn silently
            if self.latest_run_id and self.current.run_id != self.latest_run_id:
                return "exists"  # kept from an earlier run
            return "complete"
        if self.job is not None and self.job.status == Status.FAILED:
            return "rejected" if self.job.failure_reason == "rejected" else "failed"
        return "pending"

    @cached_property
    def outdated_reason(self) -> str:
        """Return "Prompt changed", "Reference changed", or "" (the picture is current)."""
        if self.current is None:
            return ""
        return selectors.outdated_reason(self.page, self.current)

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
    if current:  # pictures compare the references they were drawn with: two queries
        selectors.with_references(project, [p for p in pages if p.pk in current])
    latest_clip, current_clip = selectors.latest_and_current(Clip, page_ids)
    held = [job for job in latest_job.values() if job.status in WORKING_STATUSES]
    now = db_now() if held else None  # the database's clock, only when a worker holds a job
    return [
        PageCard(
            page=p,
            job=latest_job.get(p.pk),
            current=current.get(p.pk),
            latest_run_id=latest_run_id,
            clip_job=latest_clip.get(p.pk),
            clip=current_clip.get(p.pk),
            stalled=_stalled(latest_job.get(p.pk), now),
        )
        for p in pages
    ]


def _stalled(job: Illustration | None, now) -> bool:
    return (
        job is not None
        and job.status in WORKING_STATUSES
        and job.lease_expires_at is not None
        and job.lease_expires_at < now
    )
