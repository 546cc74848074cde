"""Editor-facing pages. Every view requires sign-in and sees only the editor's projects.

The review page is one template whose regions are inline partials: the header (progress,
run state, controls; it also carries the poll) and one card per page. The poll and every
control answer with the header and the cards that changed, as out-of-band swaps.
"""

from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import BadRequest
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HTMX_STOP_POLLING, trigger_client_event

from generation import selectors, services, thumbnails
from generation.clock import db_now
from generation.models import ACTIVE_STATUSES, Clip, Illustration, Run

from . import book, characters, polls, review
from . import services as studio_services
from .files import private_file
from .forms import (
    EditorSettingsForm,
    ExportForm,
    ManuscriptForm,
    NewPageForm,
    PageForm,
    PremiseForm,
    ProjectSettingsForm,
    PromptForm,
)
from .models import EditorSettings, Export, Page, Project
from .text import plural

TEMPLATE = "studio/project_detail.html"
# Changes are re-sent for a moment past the cursor, so a write whose timestamp came from
# a slightly slow clock (another worker machine) is never missed; re-sending a card is
# harmless.
CURSOR_MARGIN = timedelta(seconds=2)


def _owned_project(request: HttpRequest, pk: int) -> Project:
    # Another editor's project is simply not found: no hint that it exists.
    return get_object_or_404(Project, pk=pk, owner=request.user)


def _owned_page(request: HttpRequest, pk: int) -> Page:
    return get_object_or_404(
        Page.objects.select_related("project"), pk=pk, project__owner=request.user
    )


def _header_context(project: Project, *, shared: bool = False) -> dict:
    header = _shared_header(project) if shared else selectors.review_header(project)
    # The cursor is the database's clock, which stamps every change the poll looks for.
    return {
        "project": project,
        **vars(header),
        "to_queue": header.to_queue,
        "primary": header.primary,
        "on_its_way": header.on_its_way,
        "title": header.title,
        "cursor": header.now.timestamp(),
    }


def _shared_header(project: Project) -> selectors.ReviewHeader:
    """Return the project's review header, computed once per version for the polls that ask
    for it within polls.KEEP_SECONDS (by the web workers of one machine, or of all with
    Redis): while a run draws, each version is asked for by many tabs at once.

    Safe because the version was read before the header: what is cached under version N
    was computed from a state at least as new as N. The header's clock (the tab's next
    cursor) may then be a few seconds old, which only re-sends a card or two."""
    return _shared(project, "header", selectors.review_header)


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
    try:
        cursor = float(request.GET.get("since", ""))
    except ValueError:
        raise BadRequest("since must be a timestamp") from None
    return datetime.fromtimestamp(cursor, tz=timezone.get_current_timezone()) - CURSOR_MARGIN


def _run_seen(run: Run | None) -> str:
    """Return how a page knows the run it last showed: "12-running"."""
    return f"{run.pk}-{run.state}" if run is not None else ""


def _regions(
    request, project: Project, *, since: datetime, poll: bool = False, seen_run: str | None = None
) -> HttpResponse:
    """Answer with the header and, out of band, every card changed since `since`.

    For the poll, an idle project's answer is 286: the header it carries has no polling
    attributes (which stops htmx 4), and 286 stops htmx 2 as well. The poll shares its
    header with the other tabs at the same version."""
    context = _header_context(project, shared=poll)
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
            pages = selectors.changed_pages(project, since=since)
        window = _tab_window(request, context["progress"])
        if window is not None:  # a big book's tab shows one window: only its cards
            pages = (
                _window_pages(project, window)
                if pages is None
                else pages.filter(number__gte=window.first_number, number__lte=window.last_number)
            )
            context.update(window=window, filters=review.book_filter_chips(context, show=""))
        context["cards"] = review.page_cards(project, pages=pages, run=run, **review.held(context))
        if context["cards"]:  # a changed card may change its section's progress
            heads = _shared(project, "sections", review.section_heads) if poll else None
            context["section_heads"] = heads if heads is not None else review.section_heads(project)
    # The poll swaps its own element (the header); a control's answer swaps it out of band.
    context["header_oob"] = not poll
    status = HTMX_STOP_POLLING if poll and not context["polling"] else 200
    return render(request, "studio/project_regions.html", context, status=status)


def _after_action(
    request,
    project: Project,
    *,
    message: str,
    level: str,
    started: datetime,
    seen_run: str | None = None,
):
    if not request.htmx:
        getattr(messages, level)(request, message)
        return redirect(project)
    # Only the cards this action changed (its writes are stamped by the database clock),
    # or every card when it changed the run's state.
    response = _regions(request, project, since=started, seen_run=seen_run)
    return trigger_client_event(response, "toast", {"level": level, "message": message})


def _control(request, project: Project, action, say) -> HttpResponse:
    """Run a control service and answer with what it changed and a toast: say(result)
    returns the toast's message and level."""
    started = db_now()
    seen_run = _run_seen(selectors.latest_run(project))
    message, level = say(action())
    return _after_action(
        request, project, message=message, level=level, started=started, seen_run=seen_run
    )


def _if_queued(done, nothing: str):
    """Return the say() of a control that queues: done(count) when it did, else nothing."""

    def say(result: services.ControlResult) -> tuple[str, str]:
        return (done(result.count), "success") if result.count else (nothing, "info")

    return say


# --- pages -------------------------------------------------------------------------------


@login_required
@require_GET
def project_list(request: HttpRequest) -> HttpResponse:
    projects = list(selectors.with_progress(Project.objects.filter(owner=request.user)))
    runs = selectors.latest_runs(projects)
    outdated = selectors.outdated_counts(projects)
    for project in projects:
        project.outdated_count = outdated[project.pk]
    rows = [
        (project, selectors.annotated_progress(project), runs.get(project.pk))
        for project in projects
    ]
    return render(request, "studio/project_list.html", {"rows": rows})


@login_required
@require_http_methods(["GET", "POST"])
def project_create(request: HttpRequest) -> HttpResponse:
    """A new project, blank or from a manuscript, with a preview of the split."""
    form = ManuscriptForm(request.POST or None, request.FILES or None)
    preview = None
    if request.method == "POST" and form.is_valid():
        pages = form.cleaned_data["pages"]
        if "preview" in request.POST:
            preview = pages
            form = ManuscriptForm(
                initial={**form.cleaned_data, "manuscript": form.cleaned_data["manuscript"]}
            )
        else:
            project = studio_services.create_project(
                owner=request.user,
                title=form.cleaned_data["title"],
                style_guide=form.cleaned_data["style_guide"],
                pages=pages,
            )
            messages.success(
                request, f"Created “{project.title}” with {plural(len(pages), 'page')}."
            )
            return redirect(project)
    status = 422 if request.method == "POST" and form.errors else 200
    context = {"form": form, "preview": preview, "text_provider": selectors.story_phase_available()}
    return render(request, "studio/project_create.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def project_create_premise(request: HttpRequest) -> HttpResponse:
    """A new project whose pages a text service writes from a premise (the story phase)."""
    form = PremiseForm(request.POST or None)
    configured = selectors.story_phase_available()
    if request.method == "POST" and configured and form.is_valid():
        data = form.cleaned_data
        try:
            project = services.create_story_project(
                owner=request.user,
                title=data["title"],
                style_guide=data["style_guide"],
                premise=data["premise"],
                audience=data["audience"],
                pages=data["page_count"],
            )
        except services.StoryNotPossible as refusal:
            form.add_error(None, str(refusal))
        else:
            messages.success(
                request, f"Writing “{project.title}”: {plural(data['page_count'], 'page')}."
            )
            return redirect("project-generating", pk=project.pk)
    status = 422 if request.method == "POST" else 200
    context = {"form": form, "text_provider": configured}
    return render(request, "studio/project_premise.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def project_settings(request: HttpRequest, pk: int) -> HttpResponse:
    """Rename the project and edit its style guide."""
    project = _owned_project(request, pk)
    form = ProjectSettingsForm(request.POST or None, instance=project)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Project saved.")
        return redirect(project)
    status = 422 if request.method == "POST" else 200
    return render(
        request, "studio/project_settings.html", {"project": project, "form": form}, status=status
    )


@login_required
@require_http_methods(["GET", "POST"])
def project_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask, then delete the project with its pages, history and stored files."""
    project = _owned_project(request, pk)
    if request.method == "POST":
        title = project.title
        studio_services.delete_project(project=project)
        messages.success(request, f"Deleted “{title}” with its images, clips and exports.")
        return redirect("project-list")
    counts = {
        "pages": project.pages.count(),
        "images": Illustration.objects.filter(page__project=project).exclude(image="").count(),
        "clips": Clip.objects.filter(page__project=project).exclude(video="").count(),
        "exports": project.exports.exclude(file="").count(),
    }
    return render(request, "studio/project_delete.html", {"project": project, **counts})


def _pages_context(project: Project, form: NewPageForm, after: Page | None = None) -> dict:
    pages = list(project.pages.all())
    pictures = selectors.current_picture_ids([page.pk for page in pages])
    for page in pages:
        page.picture_id = pictures.get(page.pk)
    sections = list(dict.fromkeys(page.section for page in pages if page.section))
    return {"project": project, "pages": pages, "form": form, "after": after, "sections": sections}


@login_required
@require_GET
def project_pages(request: HttpRequest, pk: int) -> HttpResponse:
    """Edit the story: every page with its picture, label and section, in order, to edit,
    reorder (drag, keys or buttons), insert after any page, or remove.
    ?after=<page id> opens the form that inserts a page after that one."""
    project = _owned_project(request, pk)
    after = None
    if request.GET.get("after"):
        try:
            after = project.pages.get(pk=int(request.GET["after"]))
        except (ValueError, Page.DoesNotExist):
            return _bad_request("There is no such page in this project to insert after.")
    form = NewPageForm(initial={"after": after.pk, "section": after.section} if after else None)
    return render(request, "studio/project_pages.html", _pages_context(project, form, after))


@login_required
@require_POST
def page_add(request: HttpRequest, pk: int) -> HttpResponse:
    project = _owned_project(request, pk)
    form = NewPageForm(request.POST)
    after = None
    if form.is_valid() and form.cleaned_data["after"]:
        after = project.pages.filter(pk=form.cleaned_data["after"]).first()
        if after is None:
            form.add_error(None, "The page to insert after is gone; add the page again.")
    page = None
    if form.is_valid():
        try:
            page = studio_services.add_page(
                project=project,
                text=form.cleaned_data["text"],
                label=form.cleaned_data["label"],
                section=form.cleaned_data["section"],
                after=after,
            )
        except studio_services.TooManyPages as error:
            form.add_error(None, str(error))
    if page is None:
        context = _pages_context(project, form, after)
        return render(request, "studio/project_pages.html", context, status=422)
    characters.suggest_for_page(page)
    messages.success(request, f"Added page {page.number}.")
    return redirect(f"{reverse('project-pages', args=[project.pk])}#edit-page-{page.pk}")


@login_required
@require_POST
def pages_reorder(request: HttpRequest, pk: int) -> HttpResponse:
    """Put the pages in a new order: `order` lists every page id, comma-separated, in the
    new order (the page editor's drag and drop and Alt+↑/↓). Answers the new numbers."""
    project = _owned_project(request, pk)
    try:
        order = [int(part) for part in request.POST.get("order", "").split(",")]
    except ValueError:
        return _bad_request("The order must list page ids separated by commas.")
    try:
        studio_services.reorder_pages(project=project, order=order)
    except studio_services.PageOrderError as refusal:
        return _bad_request(str(refusal))
    numbers = dict(project.pages.values_list("pk", "number"))
    return JsonResponse({"pages": [{"id": pk, "number": numbers[pk]} for pk in order]})


@login_required
@require_http_methods(["GET", "POST"])
def page_edit(request: HttpRequest, pk: int) -> HttpResponse:
    page = _owned_page(request, pk)
    form = PageForm(request.POST or None, instance=page)
    text_before = page.text
    if request.method == "POST" and form.is_valid():
        form.save()
        _save_page_characters(page, form, text_changed=page.text != text_before)
        messages.success(request, f"Page {page.number} saved.{_outdated_note(page)}")
        return redirect("project-pages", pk=page.project_id)
    status = 422 if request.method == "POST" else 200
    sections = page.project.pages.exclude(section="").order_by("number")
    context = {"page": page, "form": form, "sections": _distinct(sections, "section")}
    return render(request, "studio/page_edit.html", context, status=status)


def _distinct(pages, field: str) -> list[str]:
    return list(dict.fromkeys(pages.values_list(field, flat=True)))


@login_required
@require_http_methods(["GET", "POST"])
def page_delete(request: HttpRequest, pk: int) -> HttpResponse:
    page = _owned_page(request, pk)
    if request.method == "POST":
        number = page.number
        studio_services.remove_page(page=page)
        messages.success(request, f"Removed page {number}; the pages after it moved up.")
        return redirect("project-pages", pk=page.project_id)
    picture_id = selectors.current_picture_ids([page.pk]).get(page.pk)
    return render(request, "studio/page_delete.html", {"page": page, "picture_id": picture_id})


@login_required
@require_POST
def page_move(request: HttpRequest, pk: int) -> HttpResponse:
    page = _owned_page(request, pk)
    direction = request.POST.get("direction")
    if direction not in ("up", "down"):
        raise BadRequest("direction must be up or down")
    studio_services.move_page(page=page, by=-1 if direction == "up" else 1)
    return redirect("project-pages", pk=page.project_id)


def _save_page_characters(page: Page, form, *, text_changed: bool) -> None:
    """Keep who the editor says appears on the page; a changed text adds the characters
    it now names (suggestions the editor can untick later)."""
    if form.cleaned_data.get("characters_shown"):
        characters.set_page_characters(page=page, characters=form.cleaned_data["characters"])
    if text_changed:
        characters.suggest_for_page(page)


def _outdated_note(page: Page) -> str:
    current = page.illustrations.filter(status=Illustration.Status.COMPLETE).first()
    reason = selectors.outdated_reason(page, current) if current is not None else ""
    if reason == selectors.PROMPT_CHANGED:
        return " Its picture was drawn from the old prompt: press Regenerate to draw it again."
    if reason == selectors.REFERENCE_CHANGED:
        return (
            " Its picture was drawn with other reference pictures or descriptions: press "
            "Regenerate to draw it again."
        )
    return ""


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
    cards = review.page_cards(project, pages=pages, run=context["run"], **review.held(context))
    heads = review.section_heads(project)
    review.group_into_sections(cards, heads)
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


@login_required
@require_GET
def project_book(request: HttpRequest, pk: int) -> HttpResponse:
    """The book preview: one spread at a time, as it will print (?spread=N, ?size=a4)."""
    project = _owned_project(request, pk)
    try:
        number = int(request.GET.get("spread", "1"))
    except ValueError:
        return HttpResponseBadRequest("spread must be a whole number")
    try:
        spread = book.spread_of(project, number)
        size = book.page_size(project, request.GET.get("size"))
    except ValueError as error:
        return HttpResponseBadRequest(str(error))
    context = {
        "project": project,
        "spread": spread,
        "size": size,
        "sizes": Export.PageSize.choices,
        "spread_numbers": range(1, spread.count + 1),
    }
    return render(request, "studio/project_book.html", context)


@require_GET
def project_poll(request: HttpRequest, pk: int) -> HttpResponse:
    """One request per tab every 2 s: 204 with no body when the project is still at the
    tab's version (?v=), else the header plus the cards changed since the cursor, shared
    with the other tabs of the browser (studio.polls)."""
    polled = polls.polled_project(request, pk)
    if polled is None:  # not signed in, not the owner, or an unusual session
        return _changed_poll(request, pk)
    shown = request.GET.get("v", "")
    if shown == str(polled.version):
        return HttpResponse(status=204)
    since = _since(request)
    csrf_secret = request.COOKIES.get(settings.CSRF_COOKIE_NAME)
    shared = turn = None
    if csrf_secret and shown.isdigit():
        shared = polls.SharedAnswers(request, polled, csrf_secret)
        turn = shared.news(shown=int(shown), since=since)
        if isinstance(turn, polls.SharedAnswer):
            return HttpResponse(turn.content, status=turn.status)
        if turn is polls.Turn.LATER:
            return HttpResponse(status=204)
    project = get_object_or_404(Project.objects.select_related("owner"), pk=pk)
    request.user = project.owner  # checked as login_required and get_user() would
    if turn is polls.Turn.MAKE:  # every card changed within the window: any tab's cursor
        since = min(since, _shared_header(project).now - polls.SHARED_POLL_WINDOW)
    response = _regions(request, project, since=since, poll=True)
    if shared is not None:
        shared.keep(version=project.version, since=since, response=response)
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


# --- project controls ----------------------------------------------------------------------


@login_required
@require_POST
def project_generate(request: HttpRequest, pk: int) -> HttpResponse:
    project = _owned_project(request, pk)

    def say(queued: services.ControlResult) -> tuple[str, str]:
        if queued.count:
            return f"Queued {plural(queued.count, 'illustration')}.", "success"
        if queued.resumed:
            return "Resumed: the missing pages were already queued.", "success"
        return "Nothing to queue: every page is illustrated or on its way.", "info"

    return _control(
        request,
        project,
        lambda: services.generate_missing(project=project, requested_by=request.user),
        say,
    )


@login_required
@require_POST
def project_generate_section(request: HttpRequest, pk: int) -> HttpResponse:
    """Generate the missing pictures of one section (the pages sharing a section name)."""
    project = _owned_project(request, pk)
    section = request.POST.get("section")
    if section is None:
        return _bad_request("Say which section: the form sends its name as “section”.")
    if not project.pages.filter(section=section).exists():
        return _bad_request(f"This project has no section named “{section}”.")
    where = f"in “{section}”" if section else "before the first section"
    return _control(
        request,
        project,
        lambda: services.generate_missing_in_section(
            project=project, section=section, requested_by=request.user
        ),
        _if_queued(
            lambda n: f"Queued {plural(n, 'illustration')} {where}.",
            f"Nothing to queue {where}: every page is illustrated or on its way.",
        ),
    )


def _bad_request(reason: str) -> HttpResponse:
    """Answer bad input with 400 and the reason, in words, as plain text."""
    return HttpResponse(reason, status=400, content_type="text/plain; charset=utf-8")


@login_required
@require_POST
def project_retry_failed(request: HttpRequest, pk: int) -> HttpResponse:
    project = _owned_project(request, pk)
    return _control(
        request,
        project,
        lambda: services.retry_failed(project=project, requested_by=request.user),
        _if_queued(lambda n: f"Retrying {plural(n, 'failed page')}.", "No failed pages to retry."),
    )


@login_required
@require_POST
def project_regenerate_outdated(request: HttpRequest, pk: int) -> HttpResponse:
    project = _owned_project(request, pk)
    return _control(
        request,
        project,
        lambda: services.regenerate_outdated(project=project, requested_by=request.user),
        _if_queued(
            lambda n: (
                f"Drawing {plural(n, 'changed page')} again; the old pictures stay until "
                "the new ones are complete."
            ),
            "No picture is out of date.",
        ),
    )


@login_required
@require_POST
def project_stop(request: HttpRequest, pk: int) -> HttpResponse:
    project = _owned_project(request, pk)

    def say(stopped: services.ControlResult) -> tuple[str, str]:
        if stopped.run is None:
            return "Nothing is running.", "info"
        if stopped.run.state == Run.State.STOPPING:
            return "Stopping: the images being drawn now will finish; the rest waits.", "warning"
        return "Stopped. Completed illustrations are kept.", "warning"

    return _control(request, project, lambda: services.stop(project=project), say)


@login_required
@require_POST
def project_pause(request: HttpRequest, pk: int) -> HttpResponse:
    project = _owned_project(request, pk)
    return _control(
        request,
        project,
        lambda: services.pause(project=project),
        lambda paused: (
            ("Paused. Press Resume to continue.", "warning")
            if paused.run
            else ("Nothing to pause.", "info")
        ),
    )


@login_required
@require_POST
def project_resume(request: HttpRequest, pk: int) -> HttpResponse:
    project = _owned_project(request, pk)
    return _control(
        request,
        project,
        lambda: services.resume(project=project),
        lambda resumed: ("Resumed.", "success") if resumed.run else ("Nothing to resume.", "info"),
    )


@login_required
@require_POST
def project_switch_service(request: HttpRequest, pk: int) -> HttpResponse:
    """Continue the project's remaining pages with another configured image service."""
    project = _owned_project(request, pk)
    service = request.POST.get("service", "")
    if service not in dict(selectors.image_service_choices()):
        raise BadRequest("service must be one of the configured image services")
    label = dict(selectors.image_service_choices())[service].split(" · ")[0]
    return _control(
        request,
        project,
        lambda: services.switch_service(project=project, service=service),
        lambda switched: (
            f"The remaining pages continue with {label}."
            if switched.run
            else f"New pictures of this project will be drawn by {label}.",
            "success",
        ),
    )


# --- page controls ---------------------------------------------------------------------


@login_required
@require_POST
def page_retry(request: HttpRequest, pk: int) -> HttpResponse:
    page = _owned_page(request, pk)
    return _control(
        request,
        page.project,
        lambda: services.queue_page(page=page, requested_by=request.user),
        _if_queued(
            lambda n: f"Page {page.number} queued.",
            f"Page {page.number} is already illustrated or on its way.",
        ),
    )


@login_required
@require_POST
def page_regenerate(request: HttpRequest, pk: int) -> HttpResponse:
    page = _owned_page(request, pk)
    return _control(
        request,
        page.project,
        lambda: services.queue_page(page=page, requested_by=request.user, regenerate=True),
        _if_queued(
            lambda n: (
                f"Page {page.number} will be drawn again; "
                "its picture stays until the new one is done."
            ),
            f"Page {page.number} is already on its way.",
        ),
    )


@login_required
@require_POST
def page_next(request: HttpRequest, pk: int) -> HttpResponse:
    page = _owned_page(request, pk)
    return _control(
        request,
        page.project,
        lambda: services.prioritize(page=page, requested_by=request.user),
        _if_queued(
            lambda n: f"Page {page.number} is next in line.",
            f"Page {page.number} is not waiting in the queue.",
        ),
    )


@login_required
@require_http_methods(["GET", "POST"])
def page_prompt(request: HttpRequest, pk: int) -> HttpResponse:
    """Edit what the page asks the image service to draw; optionally retry at once."""
    page = _owned_page(request, pk)
    latest = page.illustrations.order_by("-pk").first()
    rejected = latest is not None and latest.failure_reason == "rejected"
    # A rejected page opens with the prompt the service refused, to edit, beside its reason.
    initial = {"prompt": page.illustration_prompt} if rejected and not page.prompt else None
    form = PromptForm(request.POST or None, instance=page, initial=initial)
    if request.method == "POST" and form.is_valid():
        started = db_now()
        form.save()
        _save_page_characters(page, form, text_changed=False)
        message = f"Prompt of page {page.number} saved."
        if "retry" in request.POST:
            queued = services.queue_page(page=page, requested_by=request.user, regenerate=True)
            if queued.count:
                message += " Drawing it again."
        else:
            message += _outdated_note(page)
        return _after_action(
            request, page.project, message=message, level="success", started=started
        )
    has_picture = page.illustrations.filter(status=Illustration.Status.COMPLETE).exists()
    template = "studio/page_prompt.html#prompt-form" if request.htmx else "studio/page_prompt.html"
    status = 422 if request.method == "POST" else 200  # htmx swaps 422: see base.html
    context = {
        "page": page,
        "form": form,
        "has_picture": has_picture,
        **selectors.page_sending(page),
        "rejection": latest.error_message if rejected else None,
    }
    return render(request, template, context, status=status)


@login_required
@require_GET
def page_history(request: HttpRequest, pk: int) -> HttpResponse:
    page = _owned_page(request, pk)
    jobs = list(page.illustrations.prefetch_related("attempts").order_by("-pk"))
    clips = list(page.clips.prefetch_related("attempts").order_by("-pk"))
    template = "studio/page_history.html#history" if request.htmx else "studio/page_history.html"
    for job in jobs:
        job.kind_label = "Picture"
    for clip in clips:
        clip.kind_label = "Clip"
    context = {"page": page, "jobs": [*jobs, *clips], "versions": selectors.page_versions(page)}
    return render(request, template, context)


# --- images ------------------------------------------------------------------------------


def _owned_image(request: HttpRequest, pk: int) -> Illustration:
    illustration = get_object_or_404(
        Illustration.objects.select_related("page__project"),
        pk=pk,
        page__project__owner=request.user,
        status__in=(Illustration.Status.COMPLETE, Illustration.Status.REPLACED),
    )
    if not illustration.image:
        raise Http404("No image")
    return illustration


@login_required
@require_GET
def illustration_image(request: HttpRequest, pk: int) -> FileResponse:
    illustration = _owned_image(request, pk)
    return private_file(illustration.image.name, "image/png")


@login_required
@require_GET
def illustration_thumbnail(request: HttpRequest, pk: int) -> FileResponse:
    illustration = _owned_image(request, pk)
    return private_file(thumbnails.ensure_thumbnail(illustration.image), "image/webp")


# --- export ------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def project_export(request: HttpRequest, pk: int) -> HttpResponse:
    """Start an export (ZIP or PDF) and follow it; warns first about missing pages."""
    project = _owned_project(request, pk)
    last = project.exports.first()  # the form offers the last choice again
    initial = {"format": last.format, "page_size": last.page_size} if last else None
    form = ExportForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        studio_services.start_export(
            project=project,
            format=form.cleaned_data["format"],
            page_size=form.cleaned_data["page_size"],
        )
        messages.success(request, "Export started; it will be ready to download here.")
        return redirect("project-export", pk=project.pk)
    exports = list(project.exports.all()[:10])
    context = {
        "project": project,
        "form": form,
        "progress": selectors.project_progress(project),
        "exports": exports,
        "polling": any(e.status in (Export.Status.QUEUED, Export.Status.RUNNING) for e in exports),
    }
    if request.htmx:
        status = 200 if context["polling"] else HTMX_STOP_POLLING
        return render(request, "studio/project_export.html#exports", context, status=status)
    status = 422 if request.method == "POST" else 200
    return render(request, "studio/project_export.html", context, status=status)


@login_required
@require_GET
def export_download(request: HttpRequest, pk: int) -> HttpResponse:
    export = get_object_or_404(
        Export, pk=pk, project__owner=request.user, status=Export.Status.COMPLETE
    )
    if not export.file:
        raise Http404("No file")
    content_type = "application/zip" if export.format == Export.Format.ZIP else "application/pdf"
    response = private_file(export.file.name, content_type)
    response["Content-Disposition"] = (
        f'attachment; filename="{export.file.name.rsplit("/", 1)[-1]}"'
    )
    return response


# --- clips -------------------------------------------------------------------------------


@login_required
@require_POST
def project_generate_clips(request: HttpRequest, pk: int) -> HttpResponse:
    project = _owned_project(request, pk)
    return _control(
        request,
        project,
        lambda: services.generate_missing_clips(project=project, requested_by=request.user),
        _if_queued(
            lambda n: f"Queued {plural(n, 'clip')}.",
            "Nothing to queue: every illustrated page has its clip or one on its way.",
        ),
    )


@login_required
@require_POST
def project_retry_failed_clips(request: HttpRequest, pk: int) -> HttpResponse:
    project = _owned_project(request, pk)
    return _control(
        request,
        project,
        lambda: services.retry_failed_clips(project=project, requested_by=request.user),
        _if_queued(lambda n: f"Retrying {plural(n, 'failed clip')}.", "No failed clips to retry."),
    )


@login_required
@require_POST
def page_clip(request: HttpRequest, pk: int) -> HttpResponse:
    """Make the page's clip, or make it again (the old one plays until the new is done)."""
    page = _owned_page(request, pk)
    return _control(
        request,
        page.project,
        lambda: services.queue_clip(page=page, requested_by=request.user, regenerate=True),
        _if_queued(
            lambda n: f"Page {page.number}'s clip is on its way.",
            f"Page {page.number} needs a picture first, or its clip is already on its way.",
        ),
    )


@login_required
@require_GET
def clip_video(request: HttpRequest, pk: int) -> HttpResponse:
    clip = get_object_or_404(
        Clip,
        pk=pk,
        page__project__owner=request.user,
        status__in=(Clip.Status.COMPLETE, Clip.Status.REPLACED),
    )
    if not clip.video:
        raise Http404("No clip")
    return private_file(clip.video.name, clip.content_type or "image/webp")


# --- the editor's own settings -------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def editor_settings(request: HttpRequest) -> HttpResponse:
    """The editor's settings: whether a run's end is emailed."""
    # An unticked box sends nothing: an empty POST is still a submitted form.
    data = request.POST if request.method == "POST" else None
    form = EditorSettingsForm(data, instance=EditorSettings.of(request.user))
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Settings saved.")
        return redirect("editor-settings")
    status = 422 if request.method == "POST" else 200
    return render(request, "studio/editor_settings.html", {"form": form}, status=status)
