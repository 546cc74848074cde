"""The project list, new projects (from a manuscript or a premise), a project's settings
and its deletion."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from generation import references, selectors, services
from generation.models import ACTIVE_STATUSES, Clip, CoverJob, Illustration

from .. import services as studio_services
from ..forms import (
    MANUSCRIPT_LIMITS,
    CoverDrawForm,
    ManuscriptForm,
    PremiseForm,
    ProjectSettingsForm,
)
from ..models import Project
from ..printing import generated_cover, page_cover_picture
from ..text import plural
from .common import _owned_project


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
            try:
                project = studio_services.create_project(
                    owner=request.user,
                    title=form.cleaned_data["title"],
                    style_guide=form.cleaned_data["style_guide"],
                    pages=pages,
                )
            except studio_services.TooManyProjects as refusal:
                form.add_error(None, str(refusal))
            else:
                messages.success(
                    request, f"Created “{project.title}” with {plural(len(pages), 'page')}."
                )
                return redirect(project)
    status = 422 if request.method == "POST" and form.errors else 200
    context = {
        "form": form,
        "preview": preview,
        "text_provider": selectors.story_phase_available(),
        "manuscript_limits": MANUSCRIPT_LIMITS,
    }
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
        except (services.StoryNotPossible, studio_services.TooManyProjects) as refusal:
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
    """Rename the project and edit its style guide, its service, limits and print
    settings; its cover section shows and draws the front cover's picture."""
    project = _owned_project(request, pk)
    if request.htmx and request.htmx.target == "cover":  # the cover section's poll
        return render(request, "studio/project_settings.html#cover", cover_context(project))
    form = ProjectSettingsForm(request.POST or None, instance=project)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Project saved.")
        return redirect(project)
    status = 422 if request.method == "POST" else 200
    return settings_page(request, project, form=form, status=status)


def settings_page(
    request: HttpRequest,
    project: Project,
    *,
    form: ProjectSettingsForm | None = None,
    cover_form: CoverDrawForm | None = None,
    status: int = 200,
) -> HttpResponse:
    """Render the project's settings page (with a refused form's errors)."""
    context = {
        "form": form or ProjectSettingsForm(instance=project),
        # The project's model is shut down or soon will be: said here, with its replacement
        # in one click.
        "model_notice": selectors.project_model_notice(project),
        # The cover section shows the project as saved, not as a refused form posted it.
        **cover_context(Project.objects.get(pk=project.pk), form=cover_form),
    }
    return render(request, "studio/project_settings.html", context, status=status)


def cover_context(project: Project, *, form: CoverDrawForm | None = None) -> dict:
    """Return what the settings page's cover section shows: both pictures the front can
    have, which one it uses, the generated cover on its way (or why the last one failed),
    and the form that draws it."""
    generated = generated_cover(project)
    latest = CoverJob.objects.filter(project=project).order_by("-pk").first()
    status = latest.status if latest is not None else None
    return {
        "project": project,
        "page_picture": page_cover_picture(project),
        "generated": generated,
        "drawing": latest if status in ACTIVE_STATUSES else None,
        "failed": latest if status == CoverJob.Status.FAILED else None,
        "uses_generated": project.cover_source == Project.CoverSource.GENERATED
        and generated is not None,
        "cover_form": form or CoverDrawForm(instance=project),
        "default_prompt": references.default_cover_prompt(project),
    }


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
