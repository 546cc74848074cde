"""The review page and the generating view.

The review page is one template whose regions are inline partials: the header (progress,
run state, controls; it also carries the poll) and one card per page. The poll and every
control (studio.views.controls) answer with the header and the cards that changed, as
out-of-band swaps.
"""

import math
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_GET
from django_htmx.http import HTMX_STOP_POLLING

from generation import selectors
from generation.clock import db_now
from generation.models import ACTIVE_STATUSES, Run

from .. import polls, review
from ..models import Project
from .common import _owned_project

TEMPLATE = "studio/project_detail.html"
# Changes are re-sent for a moment past the cursor, so a write whose timestamp came from
# a slightly slow clock (another worker machine) is never missed; re-sending a card is
# harmless.
CURSOR_MARGIN = timedelta(seconds=2)


def _header_context(project: Project, *, shared: bool = False, now=None) -> dict:
    header = _shared_header(project, now=now) if shared else selectors.review_header(project)
    # The cursor is the database's clock, which stamps every change the poll looks for.
    return {
        "project": project,
        **vars(header),
        "to_queue": header.to_queue,
        "primary": header.primary,
        "economy": header.economy,
        "retry_estimate": header.retry_estimate,
        "on_its_way": header.on_its_way,
        "drawing": header.drawing,
        "title": header.title,
        "cursor": header.now.timestamp(),
        # The tab asks again by then even if nothing changes (a lease runs out).
        "poll_due": header.due.timestamp() if header.due is not None else None,
    }


def _shared_header(project: Project, *, now=None) -> selectors.ReviewHeader:
    """Return the project's review header, computed once per version for the polls that ask
    for it within polls.KEEP_SECONDS (by the web workers of one machine, or of all with
    Redis): while a run draws, each version is asked for by many tabs at once.

    Safe because the version was read before the header: what is cached under version N
    was computed from a state at least as new as N. The header's clock (the tab's next
    cursor) may then be a few seconds old, which only re-sends a card or two. A header
    whose `due` has come (by `now`, the database's clock) is computed again: a worker's
    lease ran out since, which no version shows."""
    key = _version_key(project, "header")
    header = cache.get(key)
    if header is not None and header.due is not None and (now or db_now()) >= header.due:
        header = None
    if header is None:
        header = selectors.review_header(project)
        cache.set(key, header, polls.KEEP_SECONDS)
    return header


def _version_key(project: Project, name: str) -> str:
    """Return a cache key for something computed from this version of the project (its
    creation time tells apart a project of a reused id)."""
    return f"studio:{name}:{project.pk}:{project.created_at.timestamp()}:{project.version}"


def _shared(project: Project, name: str, compute):
    key = _version_key(project, name)
    value = cache.get(key)
    if value is None:
        value = compute(project)
        cache.set(key, value, polls.KEEP_SECONDS)
    return value


def _since(request: HttpRequest) -> datetime:
    # NaN, infinities and years no datetime can hold are refused like words are.
    try:
        cursor = float(request.GET.get("since", ""))
        moment = datetime.fromtimestamp(cursor, tz=timezone.get_current_timezone())
        return moment - CURSOR_MARGIN
    except (ValueError, OverflowError, OSError):
        raise BadRequest("since must be a timestamp") from None


def _run_seen(run: Run | None) -> str:
    """Return how a page knows the run it last showed: "12-running"."""
    return f"{run.pk}-{run.state}" if run is not None else ""


def _regions(
    request,
    project: Project,
    *,
    since: datetime,
    poll: bool = False,
    seen_run: str | None = None,
    now: datetime | None = None,
) -> HttpResponse:
    """Answer with the header and, out of band, every card changed since `since` (or whose
    worker fell silent since: cards and header always change together).

    An idle book's tab polls too, less often (the header says which). The poll shares its
    header with the other tabs at the same version; `now` is the database's clock the
    poll read."""
    context = _header_context(project, shared=poll, now=now)
    if request.GET.get("cards") == "0":  # the generating view shows no cards
        context.update(cards=[], header_only=True)
    else:
        run = context["run"]
        if seen_run is None:
            seen_run = request.GET.get("run")
        if seen_run is not None and seen_run != _run_seen(run):
            # The run paused, halted or resumed since the page last looked: its waiting
            # pages read "Held", "Paused" or "Queued" by its state, though their rows did
            # not change, so every card moves.
            pages = None
        else:
            pages = selectors.changed_pages(project, since=since, now=context["now"])
        window = _tab_window(request, context["progress"])
        if window is not None:  # a big book's tab shows one window: only its cards
            pages = (
                _window_pages(project, window)
                if pages is None
                else pages.filter(number__gte=window.first_number, number__lte=window.last_number)
            )
            context.update(window=window, filters=review.book_filter_chips(context, show=""))
        context["cards"] = review.page_cards(
            project, pages=pages, run=run, now=context["now"], **review.held(context)
        )
        if context["cards"]:  # a changed card may change its section's progress
            heads = _shared(project, "sections", review.section_heads) if poll else None
            context["section_heads"] = heads if heads is not None else review.section_heads(project)
    # The poll swaps its own element (the header); a control's answer swaps it out of band.
    context["header_oob"] = not poll
    response = render(request, "studio/project_regions.html", context)
    response.header_now = context["now"]  # the database's clock the answer was read at
    return response


@login_required
@require_GET
def project_detail(request: HttpRequest, pk: int) -> HttpResponse:
    project = _owned_project(request, pk)
    try:
        show = review.filter_key(request.GET.get("show"))
    except ValueError as error:
        return HttpResponseBadRequest(str(error))
    context = _header_context(project)
    try:
        window = review.window_of(request.GET.get("start"), pages=context["progress"].pages)
    except ValueError as error:
        return HttpResponseBadRequest(str(error))
    pages = _window_pages(project, window) if window.windowed else None
    cards = review.page_cards(
        project, pages=pages, run=context["run"], now=context["now"], **review.held(context)
    )
    heads = review.section_heads(project)
    cards = review.group_into_sections(cards, heads)
    if window.windowed:  # not every card is here to count: the header's aggregates count
        filters = review.book_filter_chips(context, show=show)
    else:
        filters = review.filter_chips(cards, show=show)
    context.update(
        cards=cards,
        show=show,
        filters=filters,
        window=window,
        sections=heads if window.windowed else [],
    )
    return render(request, TEMPLATE, context)


def _window_pages(project: Project, window: review.Window):
    return project.pages.filter(number__gte=window.first_number, number__lte=window.last_number)


def _tab_window(request, progress) -> review.Window | None:
    """Return the window of a big book's grid the asking tab shows (?start= on its poll, or
    in the address of the page a control was pressed on; the first window when that
    address has none), or None for a whole book or a tab that names no window."""
    value = request.GET.get("start")
    if value is None and request.htmx and request.htmx.current_url:
        value = parse_qs(urlsplit(request.htmx.current_url).query).get("start", [None])[0]
    if value is None and not request.htmx.current_url:
        return None  # a tab that names no window: every changed card
    try:
        window = review.window_of(value, pages=progress.pages)
    except ValueError:
        return None
    return window if window.windowed else None


def _due(request: HttpRequest) -> float | None:
    """Return the moment the tab was told to ask again by (?due=, a timestamp), if any."""
    value = request.GET.get("due")
    if value is None:
        return None
    try:
        due = float(value)
    except ValueError:
        raise BadRequest("due must be a timestamp") from None
    if not math.isfinite(due):
        raise BadRequest("due must be a timestamp")
    return due


@require_GET
def project_poll(request: HttpRequest, pk: int) -> HttpResponse:
    """One request per tab every 2 s (an idle book's every 10 s at most): 204 with no body
    when the project is still at the tab's version (?v=) and the moment the tab was told to
    ask again by (?due=, when a worker's lease runs out) has not come, else the header
    plus the cards changed since the cursor, shared with the other tabs of the browser
    (studio.polls)."""
    polled = polls.polled_project(request, pk)
    if polled is None:  # not signed in, not the owner, or an unusual session
        return _changed_poll(request, pk)
    shown, due = request.GET.get("v", ""), _due(request)
    came_due = polled.reached(due)
    if shown == str(polled.version) and not came_due:
        return HttpResponse(status=204)
    since = _since(request)
    csrf_secret = request.COOKIES.get(settings.CSRF_COOKIE_NAME)
    shared = turn = None
    if csrf_secret and shown.isascii() and shown.isdigit() and len(shown) <= 18:
        shared = polls.SharedAnswers(request, polled, csrf_secret)
        turn = shared.news(shown=int(shown), since=since, due=due if came_due else None)
        if isinstance(turn, polls.SharedAnswer):
            return HttpResponse(turn.content, status=turn.status)
        if turn is polls.Turn.LATER:
            return HttpResponse(status=204)
    project = get_object_or_404(Project.objects.select_related("owner"), pk=pk)
    request.user = project.owner  # checked as login_required and get_user() would
    now = polled.now()
    if turn is polls.Turn.MAKE:  # every card changed within the window: any tab's cursor
        since = min(since, _shared_header(project, now=now).now - polls.SHARED_POLL_WINDOW)
    response = _regions(request, project, since=since, poll=True, now=now)
    if shared is not None:
        made = response.header_now
        shared.keep(version=project.version, since=since, response=response, made=made)
    return response


@login_required
def _changed_poll(request: HttpRequest, pk: int) -> HttpResponse:
    return _regions(request, _owned_project(request, pk), since=_since(request), poll=True)


@login_required
@require_GET
def project_generating(request: HttpRequest, pk: int) -> HttpResponse:
    """The generating view: story, then illustrations. Opening it never starts work."""
    project = _owned_project(request, pk)
    context = _header_context(project)
    story = project.story_jobs.select_related("run").order_by("-created_at", "-pk").first()
    context.update(
        header_only=True,
        text_provider=selectors.story_phase_available(),
        story=story,
        story_polling=story is not None and story.status in ACTIVE_STATUSES,
    )
    if request.htmx:
        # The story phase's own poll: its region, and the header out of band, since the
        # page count changes when the story lands.
        context["header_oob"] = True
        status = 200 if context["story_polling"] else HTMX_STOP_POLLING
        return render(request, "studio/project_generating.html#story-phase", context, status=status)
    return render(request, "studio/project_generating.html", context)
