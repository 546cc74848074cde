"""The Characters page of a project: its characters, settings, props and style reference,
their reference pictures (every version, one chosen), and drawing character sheets.

The list is one inline partial that serves both the page and its poll (while a sheet is
being drawn); every control is a plain form that htmx may enhance.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Exists, OuterRef, Prefetch
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from generation import selectors, services
from generation.models import ACTIVE_STATUSES, Illustration, SheetJob

from . import characters as character_services
from .characters import CharacterError
from .files import private_file
from .forms import CharacterDetailsForm, CharacterForm, ReferenceUploadForm
from .models import Character, Project, ReferenceImage
from .text import plural
from .views.common import _bad_request


def _owned_project(request: HttpRequest, pk: int) -> Project:
    return get_object_or_404(Project, pk=pk, owner=request.user)


def _owned_character(request: HttpRequest, pk: int) -> Character:
    return get_object_or_404(
        Character.objects.select_related("project"), pk=pk, project__owner=request.user
    )


def _with_state(queryset):
    """Annotate characters with drawing (a sheet job on its way) and fetch their versions
    and the latest sheet job, for the list in a constant number of queries."""
    active = SheetJob.objects.filter(character=OuterRef("pk"), status__in=ACTIVE_STATUSES)
    return queryset.annotate(drawing=Exists(active)).prefetch_related(
        "versions",
        Prefetch(
            "sheet_jobs",
            queryset=SheetJob.objects.order_by("-pk").prefetch_related("attempts"),
            to_attr="sheets",
        ),
    )


def _list_context(project: Project, form: CharacterForm | None = None) -> dict:
    listed = list(_with_state(project.characters.annotate(page_count=Count("pages"))))
    return {
        "project": project,
        "characters": listed,
        "without_characters": selectors.pages_without_characters(project),
        "form": form or CharacterForm(),
        "polling": any(character.drawing for character in listed),
    }


@login_required
@require_http_methods(["GET", "POST"])
def character_list(request: HttpRequest, pk: int) -> HttpResponse:
    """List the project's characters; add one (with an optional picture)."""
    project = _owned_project(request, pk)
    form = CharacterForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            character = character_services.create_character(
                project=project,
                name=data["name"],
                description=data["description"],
                aliases=data["aliases"],
                kind=data["kind"],
                image=data["image"],
                every_page=data["every_page"],
            )
        except CharacterError as error:
            form.add_error("name", str(error))
        else:
            tagged = character.pages.count()
            messages.success(
                request,
                f"Added {character.name}; tagged on {tagged} page{'s' if tagged != 1 else ''} "
                "that name it.",
            )
            return redirect("character-list", pk=project.pk)
    template = "studio/characters.html"
    if request.htmx and request.method == "GET":
        template += "#character-list"
    status = 422 if request.method == "POST" else 200
    return render(request, template, _list_context(project, form), status=status)


@login_required
@require_http_methods(["GET", "POST"])
def character_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Edit a character's name, kind, description and aliases; see and pick its versions."""
    character = _owned_character(request, pk)
    was_everywhere = character.every_page  # the form's instance takes the posted value
    form = CharacterDetailsForm(request.POST or None, instance=character)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            character_services.update_character(
                character=Character.objects.get(pk=character.pk),
                name=data["name"],
                description=data["description"],
                aliases=data["aliases"],
                kind=data["kind"],
                every_page=data["every_page"],
            )
        except CharacterError as error:
            form.add_error("name", str(error))
        else:
            note = _changed_note(character, everywhere=was_everywhere)
            messages.success(request, f"Saved {data['name']}.{note}")
            return redirect("character-edit", pk=character.pk)
    status = 422 if request.method == "POST" else 200
    context = _edit_context(character, form)
    return render(request, "studio/character_edit.html", context, status=status)


def _edit_context(character: Character, form=None, upload=None) -> dict:
    character = _with_state(Character.objects.filter(pk=character.pk)).get()
    return {
        "project": character.project,
        "character": character,
        "form": form or CharacterDetailsForm(instance=character),
        "upload": upload or ReferenceUploadForm(),
        "pages": character.pages.order_by("number"),
    }


def _changed_note(character: Character, *, everywhere: bool = False) -> str:
    """Say how many illustrated pages the character is on (every page when it is, or was
    until now) now read "Reference changed"."""
    character = Character.objects.get(pk=character.pk)
    everywhere = everywhere or character.every_page
    pages = character.project.pages.all() if everywhere else character.pages.all()
    changed = selectors.reference_changed_pages(character.project, pages)
    if not changed:
        return ""
    return (
        f" {plural(len(changed), 'illustrated page')} now read “Reference changed”: "
        "regenerate them to draw them with it."
    )


@login_required
@require_POST
def character_upload(request: HttpRequest, pk: int) -> HttpResponse:
    """Add an uploaded version of the reference picture; it becomes the chosen one."""
    character = _owned_character(request, pk)
    upload = ReferenceUploadForm(request.POST, request.FILES)
    if not upload.is_valid():
        context = _edit_context(character, upload=upload)
        return render(request, "studio/character_edit.html", context, status=422)
    character_services.add_reference(character=character, image=upload.cleaned_data["image"])
    messages.success(request, f"New picture of {character.name} chosen.{_changed_note(character)}")
    return redirect("character-edit", pk=character.pk)


@login_required
@require_POST
def character_choose(request: HttpRequest, pk: int) -> HttpResponse:
    """Pick which version of the reference picture is sent with pages."""
    character = _owned_character(request, pk)
    number = request.POST.get("version", "")
    if not (number.isascii() and number.isdigit() and len(number) <= 18):
        return _bad_request("version must be the number of one of the character's versions")
    version = get_object_or_404(ReferenceImage, pk=int(number), character=character)
    if character_services.choose_reference(character=character, version=version):
        messages.success(
            request, f"Version {version.pk} of {character.name} chosen.{_changed_note(character)}"
        )
    return redirect("character-edit", pk=character.pk)


@login_required
@require_POST
def character_draw(request: HttpRequest, pk: int) -> HttpResponse:
    """Queue a character sheet (front, three-quarter and back view) drawn by the project's
    image service; earlier versions stay."""
    character = _owned_character(request, pk)
    queued = services.draw_sheet(character=character, requested_by=request.user)
    if queued.count:
        messages.success(request, f"Drawing a character sheet of {character.name}.")
    else:
        messages.info(request, f"A sheet of {character.name} is already on its way.")
    if request.POST.get("next") == "edit":
        return redirect("character-edit", pk=character.pk)
    return redirect("character-list", pk=character.project_id)


@login_required
@require_http_methods(["GET", "POST"])
def character_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask, then delete the character with its reference pictures and sheet history."""
    character = _owned_character(request, pk)
    project = character.project
    if request.method == "POST":
        drawn_with = _drawn_with(character)
        try:
            character_services.delete_character(character=character)
        except CharacterError as error:
            messages.error(request, str(error))
            return redirect("character-edit", pk=character.pk)
        note = (
            f" {plural(drawn_with, 'illustrated page')} drawn with it now read “Reference "
            "changed”: regenerate them to draw them without it."
            if drawn_with
            else ""
        )
        messages.success(request, f"Deleted {character.name} and its pictures.{note}")
        return redirect("character-list", pk=project.pk)
    context = {
        "project": project,
        "character": character,
        "versions": character.versions.count(),
        "pages": character.pages.count(),
        "drawn_with": _drawn_with(character),
    }
    return render(request, "studio/character_delete.html", context)


def _drawn_with(character: Character) -> int:
    """Return how many pages' current pictures were drawn with the character's pictures."""
    return sum(
        1
        for sent in Illustration.objects.filter(
            page__project=character.project_id, status=Illustration.Status.COMPLETE
        ).values_list("references_sent", flat=True)
        if any(entry.get("character") == character.pk for entry in sent or [])
    )


@login_required
@require_http_methods(["GET", "POST"])
def reference_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask, then delete an earlier version of a character's reference picture."""
    version = get_object_or_404(
        ReferenceImage.objects.select_related("character__project"),
        pk=pk,
        character__project__owner=request.user,
    )
    character = version.character
    if request.method == "POST":
        try:
            character_services.delete_reference(version=version)
        except CharacterError as error:
            messages.error(request, str(error))
        else:
            messages.success(request, f"Deleted version {pk} of {character.name}.")
        return redirect("character-edit", pk=character.pk)
    context = {"project": character.project, "character": character, "version": version}
    return render(request, "studio/reference_delete.html", context)


@login_required
@require_GET
def reference_image(request: HttpRequest, pk: int) -> FileResponse:
    """A reference picture, only to its project's owner."""
    version = get_object_or_404(ReferenceImage, pk=pk, character__project__owner=request.user)
    return private_file(version.image.name, version.content_type)
