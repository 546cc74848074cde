"""The review page's controls over a project's run and its pages: each calls one service
and answers with what it changed (the header, and the changed cards out of band) and a
toast, or without htmx a redirect and a message."""

import functools
from datetime import UTC, datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_POST
from django_htmx.http import trigger_client_event

from generation import runs, selectors, services
from generation.batches import EconomyRefused, project_supports_batch
from generation.clock import db_now
from generation.models import Run

from ..models import MAX_PAGES, Project
from ..text import plural
from .common import _bad_request, _owned_page, _owned_project, safe_next
from .review import CURSOR_MARGIN, _regions, _run_seen

CHOICE = "studio/project_detail.html#generate-choice"  # what Generate Missing asks first


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
        return redirect(safe_next(request) or project)  # the gallery's page comes back
    # The cards this action changed (its writes are stamped by the database clock) and
    # those changed since the tab's cursor (X-Studio-Since: it swaps in this answer's
    # header, so its cards must be as new), or every card when it changed the run's state.
    since = min(started, _tab_cursor(request) or started)
    response = _regions(request, project, since=since, seen_run=seen_run)
    return trigger_client_event(response, "toast", {"level": level, "message": message})


def _tab_cursor(request) -> datetime | None:
    """Return the cursor of the tab a control was pressed in (the X-Studio-Since header its
    script sends), less the poll's margin; None when it sent none, or none that reads."""
    try:
        value = float(request.headers.get("X-Studio-Since", ""))
        return datetime.fromtimestamp(value, tz=UTC) - CURSOR_MARGIN
    except (ValueError, OverflowError, OSError):
        return None


def _mode(request, project: Project) -> str:
    """Return the form's `mode` ("now" when it sends none); refuse with 400 and the reason
    a value that is not a mode, or economy where the project's service takes no batches."""
    mode = request.POST.get("mode", "now")
    if mode not in Run.Mode.values:
        raise BadRequest(f"mode must be “now” or “economy”, not “{mode[:40]}”.")
    if mode == Run.Mode.ECONOMY and not project_supports_batch(project):
        raise BadRequest("This project's image service and model take no batch jobs: choose Now.")
    return mode


def _control(request, project: Project, act) -> HttpResponse:
    """Run a control: act() calls one service and returns the toast's message and level
    (a refusal of economy mode says why); the answer carries what it changed."""
    started = db_now()
    seen_run = _run_seen(selectors.latest_run(project))
    try:
        with runs.broker_missed() as missed:
            message, level = act()
    except EconomyRefused as refused:
        message, level = str(refused), "error"
    if missed:
        # The jobs are in the database; the sweep hands them to the broker once it answers.
        message += (
            " The work queue (Redis) cannot be reached right now: the pictures wait and "
            "start by themselves when it is back."
        )
        level = "warning"
    return _after_action(
        request, project, message=message, level=level, started=started, seen_run=seen_run
    )


def control(find, project_of=lambda found: found):
    """Make a review page control of act(request, found) -> (message, level): the view
    finds what the control acts on with find(request, pk) (the editor's own project, page
    or version; 404 otherwise), and answers for project_of(found)."""

    def decorate(act):
        @login_required
        @require_POST
        @functools.wraps(act)
        def view(request: HttpRequest, pk: int) -> HttpResponse:
            found = find(request, pk)
            return _control(request, project_of(found), lambda: act(request, found))

        return view

    return decorate


project_control = control(_owned_project)
page_control = control(_owned_page, lambda page: page.project)


def queued(result: services.ControlResult, done, nothing: str) -> tuple[str, str]:
    """The toast of a control that queues: done(count) when it did, else nothing."""
    return (done(result.count), "success") if result.count else (nothing, "info")


@login_required
@require_POST
def project_generate(request: HttpRequest, pk: int) -> HttpResponse:
    """Generate Missing: queue the pages never drawn. When their estimate passes what the
    budget leaves, start nothing and ask (a page of its own without htmx, the choice
    region swapped in with it): generate the pictures that fit (this view again, with
    `count`), raise the budget, or cancel."""
    project = _owned_project(request, pk)
    mode = _mode(request, project)
    count = request.POST.get("count")
    if count is not None and not (
        count.isascii() and count.isdigit() and len(count) <= 5 and 1 <= int(count) <= MAX_PAGES
    ):
        return _bad_request(f"count must be a whole number of pictures from 1 to {MAX_PAGES:,}.")
    limit = int(count) if count is not None else None
    check = selectors.budget_check(project) if mode == Run.Mode.NOW else None
    if check is not None and (limit is None or limit > check.fit):
        # Nothing starts past the budget unasked; a count that no longer fits (spend moved
        # on meanwhile) is asked again, with today's numbers.
        context = {"project": project, "choice": check, "oob": bool(request.htmx)}
        if request.htmx:
            return render(request, CHOICE, context)
        return render(request, "studio/generate_choice.html", context)

    def act() -> tuple[str, str]:
        result = services.generate_missing(
            project=project, requested_by=request.user, limit=limit, mode=mode
        )
        if result.count and mode == Run.Mode.ECONOMY:
            return (
                f"Sent {plural(result.count, 'illustration')} to a batch: within 24 hours "
                "at half price, usually within a few hours.",
                "success",
            )
        if result.count:
            return f"Queued {plural(result.count, 'illustration')}.", "success"
        if result.resumed:
            return "Resumed: the missing pages were already queued.", "success"
        return "Nothing to queue: every page is illustrated or on its way.", "info"

    response = _control(request, project, act)
    if request.htmx and limit is not None:  # the choice it answers is settled: it goes
        cleared = {"project": project, "choice": None, "oob": True}
        response.content += render_to_string(CHOICE, cleared, request).encode()
    return response


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
        lambda: queued(
            services.generate_missing_in_section(
                project=project, section=section, requested_by=request.user
            ),
            lambda n: f"Queued {plural(n, 'illustration')} {where}.",
            f"Nothing to queue {where}: every page is illustrated or on its way.",
        ),
    )


@project_control
def project_retry_failed(request, project: Project) -> tuple[str, str]:
    return queued(
        services.retry_failed(
            project=project, requested_by=request.user, mode=_mode(request, project)
        ),
        lambda n: f"Retrying {plural(n, 'failed page')}.",
        "No failed pages to retry.",
    )


@project_control
def project_regenerate_outdated(request, project: Project) -> tuple[str, str]:
    return queued(
        services.regenerate_outdated(
            project=project, requested_by=request.user, mode=_mode(request, project)
        ),
        lambda n: (
            f"Drawing {plural(n, 'changed page')} again; the old pictures stay until "
            "the new ones are complete."
        ),
        "No picture is out of date.",
    )


@project_control
def project_stop(request, project: Project) -> tuple[str, str]:
    stopped = services.stop(project=project)
    if stopped.run is None:
        return "Nothing is running.", "info"
    if stopped.run.state == Run.State.STOPPING:
        return "Stopping: the images being drawn now will finish; the rest waits.", "warning"
    return "Stopped. Completed illustrations are kept.", "warning"


@project_control
def project_pause(request, project: Project) -> tuple[str, str]:
    if services.pause(project=project).run:
        return "Paused. Press Resume to continue.", "warning"
    return "Nothing to pause.", "info"


@project_control
def project_resume(request, project: Project) -> tuple[str, str]:
    if services.resume(project=project).run:
        return "Resumed.", "success"
    return "Nothing to resume.", "info"


@project_control
def project_switch_service(request, project: Project) -> tuple[str, str]:
    """Continue the project's remaining pages with another configured image service."""
    service = request.POST.get("service", "")
    if service not in dict(selectors.image_service_choices()):
        raise BadRequest("service must be one of the configured image services")
    label = dict(selectors.image_service_choices())[service].split(" · ")[0]
    if services.switch_service(project=project, service=service).run:
        return f"The remaining pages continue with {label}.", "success"
    return f"New pictures of this project will be drawn by {label}.", "success"


@project_control
def project_switch_model(request, project: Project) -> tuple[str, str]:
    """Draw the project's pictures with another model of its service (a shut-down model's
    replacement): one click, and a run halted for its model continues."""
    model = request.POST.get("model", "")
    if model not in selectors.model_choices(project):
        raise BadRequest("model must be a current model of the project's image service")
    if services.switch_model(project=project, model=model).run:
        return f"The remaining pages continue with {model}.", "success"
    return f"New pictures of this project will be drawn with {model}.", "success"


@page_control
def page_retry(request, page) -> tuple[str, str]:
    return queued(
        services.queue_page(page=page, requested_by=request.user),
        lambda n: f"Page {page.number} queued.",
        f"Page {page.number} is already illustrated or on its way.",
    )


@page_control
def page_regenerate(request, page) -> tuple[str, str]:
    return queued(
        services.queue_page(page=page, requested_by=request.user, regenerate=True),
        lambda n: (
            f"Page {page.number} will be drawn again; its picture stays until the new one is done."
        ),
        f"Page {page.number} is already on its way.",
    )


@page_control
def page_next(request, page) -> tuple[str, str]:
    return queued(
        services.prioritize(page=page, requested_by=request.user),
        lambda n: f"Page {page.number} is next in line.",
        f"Page {page.number} is not waiting in the queue.",
    )
