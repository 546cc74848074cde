"""The story editor (every page in order: add, edit, reorder, remove) and a page's prompt
and history."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from generation import selectors, services
from generation.clock import db_now
from generation.models import Illustration

from .. import characters
from .. import services as studio_services
from ..forms import NewPageForm, PageForm, PromptForm
from ..models import Page, Project
from .common import _bad_request, _owned_page, _owned_project, safe_next
from .controls import _after_action


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
        "next_url": safe_next(request),
        # Opened in the gallery, the form stays in the gallery's panel.
        "target": "#gallery-panel" if request.htmx.target == "gallery-panel" else "#panel",
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
