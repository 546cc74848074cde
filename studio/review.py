"""The review page's cards: what each page shows and the links it offers.

The queries live in generation.selectors; this module only shapes their answers for the
templates.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from django.conf import settings
from django.urls import reverse
from django.utils.timezone import localtime

from generation import liveness, selectors
from generation.clock import db_now
from generation.models import WORKING_STATUSES, Clip, Illustration, Run

from .models import Page, Project

Status = Illustration.Status
_PLACEHOLDER = 987654321


@functools.cache
def _url_pattern(name: str) -> str:
    return reverse(name, args=[_PLACEHOLDER])


@functools.cache
def _url_pattern_of_two(name: str) -> str:
    return reverse(name, args=[_PLACEHOLDER, _PLACEHOLDER + 1])


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
    variants = _Link("page-variants")
    approve = _Link("page-approve")
    unapprove = _Link("page-unapprove")

    def __init__(self, card: "PageCard"):
        self.card = card

    @property
    def gallery(self) -> str:
        """The page's gallery (/projects/<id>/gallery/<page id>/): two ids in one link."""
        page = self.card.page
        pattern = _url_pattern_of_two("page-gallery")
        return pattern.replace(str(_PLACEHOLDER + 1), str(page.pk)).replace(
            str(_PLACEHOLDER), str(page.project_id)
        )


# The mark before a chip's words, by the card's state (hidden from screen readers: the words
# say it).
ICONS = {
    "pending": "◦",
    "queued": "⋯",
    "held": "‖",
    "paused": "‖",
    "finishing": "⟳",
    "generating": "⟳",
    "waiting": "◔",
    "retrying": "↻",
    "complete": "✓",
    "outdated": "✎",
    "failed": "✗",
    "rejected": "⊘",
}


# A chip's words, for the states whose words say no more than the state.
LABELS = {
    "pending": "Pending",
    "paused": "Paused",
    "finishing": "Finishing…",
    "waiting": "Waiting for the service",
    "generating": "Generating",
    "retrying": "Retrying",
    "complete": "Complete",
    "failed": "Failed",
    "rejected": "Rejected",
}


@dataclass(frozen=True)
class CardAction:
    """One control of a card: a POST form (so it works without JavaScript), or a link that
    opens in the side panel."""

    label: str
    url: str
    drawer: bool = False  # a link to the side panel, not a POST
    primary: bool = False
    confirm: str = ""  # asked before the POST is sent


@dataclass
class PageCard:
    page: Page
    job: Illustration | None  # the latest job, whatever its status
    current: Illustration | None  # the complete illustration shown as the picture
    run: Run | None = None  # the project's latest run: its state colours active jobs
    clip_job: Clip | None = None  # the latest clip job
    clip: Clip | None = None  # the complete clip, played on the card
    # Its worker has been silent for three beats (its lease ran out): the worker is gone,
    # and the sweep has not taken it back yet.
    stalled: bool = False
    # Set on the first card of each section when the project has sections.
    section_head: "SectionHead | None" = None
    # Its job waits in a run that halted, or whose service account halted (no credits, a
    # refused key, an outage…): see held_run().
    held: bool = False
    # Why, when the account halted and the run did not: the account's halt reason.
    account_reason: str = ""

    @property
    def clip_state(self) -> str:
        """Return "" (no clip asked for), the active clip job's status, complete or failed."""
        if self.clip_job is not None and self.clip_job.is_active:
            # Being made at the service (its webhook wakes it) reads as being made.
            status = self.clip_job.status
            return Status.GENERATING if status == Status.AWAITING else status
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
        """Return what the card shows: where the active job truly stands (held by a halted
        run, finishing in a paused one, waiting for a slot at the service), else complete,
        else why not. A picture from an earlier run is complete like any other."""
        if self.job is not None and self.job.is_active:
            return self._active_state()
        if self.current is not None:
            if self.outdated:
                return "outdated"  # offered for regeneration, never redrawn silently
            return "complete"
        if self.job is not None and self.job.status == Status.FAILED:
            return "rejected" if self.job.failure_reason == "rejected" else "failed"
        return "pending"

    @property
    def waiting_for_worker(self) -> bool:
        """Return whether the card reads "Waiting for the worker": a worker held its page
        (a call under way, a wait before the next, or one finishing in a paused run) and
        has been silent for three beats."""
        return self.stalled and self.state in ("generating", "retrying", "waiting", "finishing")

    @property
    def shown_state(self) -> str:
        """Return the state the card's colours say: its state, or "silent" while it waits
        for its worker (never the colours of a live call)."""
        return "silent" if self.waiting_for_worker else self.state

    @property
    def icon(self) -> str:
        """Return the mark before the chip's words."""
        if self.waiting_for_worker:
            return "⏸"  # "Waiting for the worker"
        return ICONS.get(self.state, "")

    @cached_property
    def actions(self) -> list[CardAction]:
        """Return the controls the card shows beside its "More" menu: what the page needs
        next, if anything."""
        state, urls, job = self.state, self.urls, self.job
        actions = []
        if state in ("pending", "failed"):
            actions.append(CardAction("Retry" if state == "failed" else "Generate", urls.retry))
        elif state == "outdated":
            actions.append(
                CardAction(
                    "Regenerate", urls.regenerate, primary=True, confirm=self._redraw_confirm
                )
            )
        elif state == "rejected":
            actions.append(
                CardAction("Edit prompt and retry", urls.prompt, drawer=True, primary=True)
            )
        if job is not None and job.candidate and not job.is_active:
            actions.append(CardAction("Choose a variant", urls.variants, drawer=True, primary=True))
        return actions

    @cached_property
    def menu(self) -> list[CardAction]:
        """Return the items of the card's "More" menu, in order."""
        state, urls, job = self.state, self.urls, self.job
        items = []
        if state in ("pending", "queued", "held", "paused"):
            items.append(CardAction("Generate next", urls.next))
        if state == "complete":
            items.append(CardAction("Regenerate", urls.regenerate, confirm=self._redraw_confirm))
        if state != "rejected":
            items.append(CardAction("Edit prompt", urls.prompt, drawer=True))
        if job is None or not (job.is_active or job.candidate):
            items.append(CardAction("Try variants", urls.variants, drawer=True))
        if self.approved:
            items.append(CardAction("Unapprove", urls.unapprove))
        elif self.current is not None:
            items.append(CardAction("Approve", urls.approve))
        if self.current is not None and self.clip_state not in (
            "queued",
            "generating",
            "retrying",
            "awaiting",
        ):
            items.append(CardAction("Remake clip" if self.clip else "Make clip", urls.make_clip))
        items.append(CardAction("History", urls.history, drawer=True))
        return items

    @property
    def _redraw_confirm(self) -> str:
        if not self.approved:
            return ""
        number = self.page.number
        return f"Page {number} is approved. Draw it again? The new picture will need approving."

    @cached_property
    def outdated_reason(self) -> str:
        """Return "Prompt changed", "Reference changed", or "" (the picture is current; a
        regeneration on its way does not change that until it is done)."""
        if self.current is None:
            return ""
        return selectors.outdated_reason(self.page, self.current)

    @property
    def outdated(self) -> bool:
        return bool(self.outdated_reason)

    @property
    def approved(self) -> bool:
        """Return whether the page's current picture is approved (approval stays with the
        picture, so a new picture needs approving again)."""
        return self.current is not None and self.current.approved_at is not None

    @property
    def needs_attention(self) -> bool:
        """Return whether an editor must act: the page failed, was rejected or is held."""
        return self.held or self.state in ("held", "failed", "rejected")

    @cached_property
    def filter_keys(self) -> list[str]:
        """Return the keys of the review page's filters that show this card."""
        return [chip.key for chip in FILTERS if chip.shows(self)]

    @property
    def filters(self) -> str:
        return " ".join(self.filter_keys)

    def _active_state(self) -> str:
        job, run = self.job, self.run
        run_state = run.state if run is not None and run.pk == job.run_id else None
        if job.status == Status.QUEUED and (run_state == Run.State.HALTED or self.held):
            return "held"  # nothing calls while the run (or its service account) is halted
        if job.status == Status.QUEUED and run_state == Run.State.PAUSED:
            return "paused"
        if job.status in WORKING_STATUSES and run_state in (Run.State.PAUSED, Run.State.STOPPING):
            return "finishing"  # the call in flight ends; nothing new starts
        if job.status == Status.GENERATING and job.waiting_for:
            return "waiting"  # a concurrency or rate limit holds the call back
        if job.status == Status.QUEUED and job.next_attempt_at is not None:
            return "waiting"  # the service asked for a long wait: back in line until then
        if job.status == Status.AWAITING:
            return "generating"  # being made at the service, which calls back when done
        return job.status

    @cached_property
    def label(self) -> str:
        """Return the chip's words: short enough for one line on a card at 1280 px."""
        state, job = self.state, self.job
        if self.waiting_for_worker:
            return "Waiting for the worker"
        if state == "queued":
            return "Queued · next" if job and job.priority > 0 else "Queued"
        if state == "held":
            return f"Held: {self.held_reason}"
        if state == "outdated":
            return self.outdated_reason or "Prompt changed"
        if state == "generating" and job.claimed_by.startswith("batch:"):
            return "In a batch"  # economy mode: the service draws it within 24 hours
        return LABELS.get(state, state)

    @cached_property
    def detail(self) -> str:
        """Return what the chip's state adds, on the line below it: "attempt 2 of 3",
        "12 a minute; next at 14:32:05" (empty when nothing)."""
        state, job = self.state, self.job
        if self.waiting_for_worker:
            return f"last heard {_clock(liveness.last_heard(job.lease_expires_at))}"
        if state == "waiting":
            parts = [job.waiting_for] if job.waiting_for else []
            if job.next_attempt_at is not None:
                parts.append(f"next at {_clock(job.next_attempt_at)}")
            return "; ".join(parts)
        if state == "generating":
            if job.claimed_by.startswith("batch:"):  # economy mode: the chip says "In a batch"
                return job.progress_note.removeprefix("In a batch · ")
            attempt = f"attempt {self.attempt_number} of {self.max_attempts}"
            return f"{job.progress_note} · {attempt}" if job.progress_note else attempt
        if state == "retrying":
            return f"next try at {_clock(job.next_attempt_at)}"
        return ""

    @property
    def sentence(self) -> str:
        """Return the chip and its detail as one sentence: "Waiting for the service (12 a
        minute; next at 14:32:05)", the chip's hover text."""
        if self.state in ("complete", "outdated") and self.current is not None:
            made = f"made {when(self.current.finished_at)}" if self.current.finished_at else ""
            by = f" by {self.current.provider}" if self.current.provider else ""
            return f"{self.label} ({made}{by})" if made or by else self.label
        return f"{self.label} ({self.detail})" if self.detail else self.label

    @property
    def held_reason(self) -> str:
        """Why a held page waits, in words: "out of credits", "budget reached"."""
        if self.run is None:
            return ""
        reason = self.run.halt_reason
        if self.run.state != Run.State.HALTED and self.held:
            reason = self.account_reason  # the run waits on its service account
        return str(dict(Run.HaltReason.choices).get(reason, "halted")).lower()

    @property
    def attempt_number(self) -> int:
        return (self.job.attempts_made if self.job else 0) + 1

    @property
    def max_attempts(self) -> int:
        return settings.STUDIO_MAX_ATTEMPTS


_UNKNOWN = object()


def page_cards(
    project: Project,
    *,
    pages=None,
    run=_UNKNOWN,
    held_run: Run | None = None,
    account_reason: str = "",
    now=None,
) -> list[PageCard]:
    """Return one card per page (or per given page), in a constant number of queries.

    `run` is the project's latest run when the caller has read it already (the header
    has); `held_run` is that run when it is held (see held_run()): its jobs wait, for
    `account_reason` when its service account halted. `now`, the database's clock the
    header was read at, tells which workers are silent, so that cards and header agree."""
    pages = list(pages if pages is not None else project.pages.all())
    if not pages:
        return []
    for page in pages:
        page.project = project  # the cards compose prompts: no query per page
    page_ids = [p.pk for p in pages]
    if run is _UNKNOWN:
        run = selectors.latest_run(project)
    latest_job, current = selectors.latest_and_current(Illustration, page_ids)
    if current:  # pictures compare the references they were drawn with: two queries
        selectors.with_references(project, [p for p in pages if p.pk in current])
    latest_clip, current_clip = selectors.latest_and_current(Clip, page_ids)
    held = [job for job in latest_job.values() if job.status in WORKING_STATUSES]
    if held and now is None:
        now = db_now()  # the database's clock, only when a worker holds a job
    return [
        PageCard(
            page=p,
            job=latest_job.get(p.pk),
            current=current.get(p.pk),
            run=run,
            clip_job=latest_clip.get(p.pk),
            clip=current_clip.get(p.pk),
            stalled=_stalled(latest_job.get(p.pk), now),
            held=_held(latest_job.get(p.pk), held_run),
            account_reason=account_reason,
        )
        for p in pages
    ]


# Numbers only, the same in every language: strftime, not Django's slower date formats.
def _clock(value) -> str:
    return localtime(value).strftime("%H:%M:%S") if value is not None else "?"


def when(value) -> str:
    """Return a moment as the cards say it, in local time: "2026-12-07 14:32"."""
    return localtime(value).strftime("%Y-%m-%d %H:%M") if value is not None else ""


def _stalled(job: Illustration | None, now) -> bool:
    return (
        job is not None
        and job.status in WORKING_STATUSES
        and job.lease_expires_at is not None
        and job.lease_expires_at < now
    )


@dataclass
class SectionHead:
    """The heading of one section on the review page: the pages that share a section name,
    wherever they are in the book, with that section's progress and its "Generate
    missing" control."""

    index: int  # the section's place on the page: its heading's id
    name: str  # "" for the pages in no named section
    first_page_id: int
    progress: selectors.Progress
    first_number: int = 1  # its first page's number: which window of the grid shows it

    @property
    def window_start(self) -> int:
        """The ?start= of the window of a big book's grid that shows this heading."""
        start = self.first_number - 1
        return start - start % WINDOW

    @property
    def title(self) -> str:
        return self.name or "Pages before the first section"


def section_heads(project: Project) -> list[SectionHead]:
    """Return the heading of every section, or [] when no page has a section (the review
    page is then one plain grid). One query, three with sections.

    A section is every page that names it, so moving a page across headings never splits
    one: the pages in no section come first, then the named sections in the order of
    their first pages, each counting its own pages."""
    if not project.pages.exclude(section="").exists():
        return []  # most books: no need to count every page's state per section
    progress = selectors.section_progress(project)
    first: dict[str, tuple[int, int]] = {}
    rows = project.pages.order_by("number").values_list("pk", "section", "number")
    for page_id, name, number in rows:
        first.setdefault(name, (page_id, number))
    names = sorted(first, key=lambda name: (name != "", first[name][1]))
    return [
        SectionHead(index, name, first[name][0], progress[name], first[name][1])
        for index, name in enumerate(names, 1)
    ]


def group_into_sections(cards: list[PageCard], heads: list[SectionHead]) -> list[PageCard]:
    """Return the cards grouped by section, in the order of the headings (each section's
    cards in page order), the first card of each group marked with its heading: also in
    a window of a big book that opens inside a section. Without headings, the cards as
    they are."""
    if not heads:
        return cards
    by_name = {head.name: head for head in heads}
    place = {head.name: place for place, head in enumerate(heads)}
    # A section named since the headings were read (a page edited meanwhile) goes last.
    grouped = sorted(
        cards, key=lambda card: (place.get(card.page.section, len(heads)), card.page.number)
    )
    previous = None
    for card in grouped:
        name = card.page.section
        card.section_head = by_name.get(name) if name != previous else None
        previous = name
    return grouped


# --- windows: a big book's grid shows WINDOW cards at a time --------------------------------

WINDOW = 50


@dataclass(frozen=True)
class Window:
    """Which pages of a big book the grid shows: the `start`-th page on (0-based), WINDOW
    of them. A book of WINDOW pages or fewer has one window: the whole book."""

    start: int
    pages: int  # the book's pages

    @property
    def windowed(self) -> bool:
        return self.pages > WINDOW

    @property
    def first_number(self) -> int:
        return self.start + 1

    @property
    def last_number(self) -> int:
        return min(self.start + WINDOW, self.pages)

    def links(self) -> list[dict]:
        """Return the navigator's links: one per window, the current one marked."""
        return [
            {
                "start": start,
                "first": start + 1,
                "last": min(start + WINDOW, self.pages),
                "current": start == self.start,
            }
            for start in range(0, self.pages, WINDOW)
        ]


def window_of(value: str | None, *, pages: int) -> Window:
    """Return the window asked for in ?start= (the first, when none); ValueError if it is
    not a whole number of pages. A start past the end shows the last window; a start
    between windows is snapped to its window."""
    try:
        start = int(value) if value else 0
    except ValueError:
        raise ValueError("start must be a whole number of pages") from None
    if start < 0:
        raise ValueError("start must be a whole number of pages")
    start = min(start, max(pages - 1, 0))
    return Window(start=start - start % WINDOW, pages=pages)


def book_filter_chips(header: dict, *, show: str) -> "list[FilterChip]":
    """Return the filter chips of a windowed book, counted over the whole book from the
    header's aggregates (its cards are not all on the page to count)."""
    progress = header["progress"]
    held = progress.queued + progress.generating if held_run(header) is not None else 0
    counts = {
        "all": progress.pages,
        "attention": progress.failed + progress.rejected + held,
        "outdated": header["outdated"],
        "unapproved": progress.not_approved,
    }
    return [
        FilterChip(key=chip.key, label=chip.label, count=counts[chip.key], active=chip.key == show)
        for chip in FILTERS
    ]


def held(header) -> dict:
    """Return page_cards' held_run and account_reason for the header (see held_run())."""
    return {"held_run": held_run(header), "account_reason": header["account"].get("reason", "")}


def held_run(header) -> Run | None:
    """Return the project's latest run if its jobs are held: the run halted, or its service
    account halted while it runs (the header's banner says so in both cases)."""
    run = header["run"]
    if run is None:
        return None
    if run.state == Run.State.HALTED:
        return run
    if run.state == Run.State.RUNNING and header["account"]["state"] == "halted":
        return run
    return None


def _held(job: Illustration | None, run: Run | None) -> bool:
    return job is not None and job.is_active and run is not None and job.run_id == run.pk


# --- filters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    """One filter chip of the review page: its key (in ?show=), its words, and which cards
    it shows."""

    key: str
    label: str
    shows: Callable[[PageCard], bool]


# The one list of filters: the chips, their counts (on the server and in the browser after
# every poll), the cards' data-filters and ?show= all read it.
FILTERS = (
    Filter("all", "All", lambda card: True),
    Filter("attention", "Needs attention", lambda card: card.needs_attention),
    Filter("outdated", "Out of date", lambda card: card.outdated),
    # Pages with no picture count too, so approved and not approved add up to the book.
    Filter("unapproved", "Not approved", lambda card: not card.approved),
)


@dataclass(frozen=True)
class FilterChip:
    key: str
    label: str
    count: int
    active: bool


def filter_key(value: str | None) -> str:
    """Return the filter asked for in ?show= ("all" when none); ValueError if unknown."""
    if not value:
        return "all"
    if value not in {chip.key for chip in FILTERS}:
        keys = ", ".join(chip.key for chip in FILTERS)
        raise ValueError(f"show must be one of {keys}")
    return value


def filter_chips(cards: list[PageCard], *, show: str) -> list[FilterChip]:
    """Return the review page's filter chips with the number of cards each shows."""
    return [
        FilterChip(
            key=chip.key,
            label=chip.label,
            count=sum(1 for card in cards if chip.key in card.filter_keys),
            active=chip.key == show,
        )
        for chip in FILTERS
    ]
