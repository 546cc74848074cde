from django.contrib import admin, messages
from django.db.models import F

from generation import services
from generation.models import Run
from generation.pricing import money
from generation.selectors import with_progress

from . import characters as character_services
from . import services as studio_services
from .models import MAX_PAGES, Character, Page, Project, ReferenceImage
from .text import plural


class PageInline(admin.TabularInline):
    model = Page
    extra = 0
    # A project holds at most MAX_PAGES pages: the admin offers no "Add another" past it.
    max_num = MAX_PAGES
    fields = ["number", "label", "text", "prompt"]
    ordering = ["number"]


class RunStateFilter(admin.SimpleListFilter):
    title = "run state"
    parameter_name = "run_state"

    def lookups(self, request, model_admin):
        return [("none", "Not started"), *Run.State.choices]

    def queryset(self, request, queryset):
        if self.value() == "none":
            return queryset.filter(run_state__isnull=True)
        if self.value():
            return queryset.filter(run_state=self.value())
        return queryset


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = [
        "title",
        "owner",
        "pages",
        "illustrated",
        "missing",
        "failed",
        "cost",
        "run_state",
        "created_at",
    ]
    list_filter = [RunStateFilter, "created_at"]
    search_fields = ["title", "owner__username"]
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]
    inlines = [PageInline]
    actions = [
        "generate_missing",
        "generate_missing_clips",
        "retry_failed",
        "stop",
        "pause",
        "resume",
    ]

    def get_queryset(self, request):
        return with_progress(super().get_queryset(request))

    def delete_model(self, request, obj):
        # The web page's deletion, so the project's files go too once it commits.
        studio_services.delete_project(project=obj)

    def delete_queryset(self, request, queryset):
        for project in queryset:
            studio_services.delete_project(project=project)

    @admin.display(ordering="page_count")
    def pages(self, project):
        return project.page_count

    @admin.display(ordering="illustrated_count")
    def illustrated(self, project):
        return project.illustrated_count

    @admin.display(ordering=F("page_count") - F("illustrated_count"))
    def missing(self, project):
        return project.page_count - project.illustrated_count

    @admin.display(ordering="failed_count")
    def failed(self, project):
        return project.failed_count + project.rejected_count  # rejected prompts included

    @admin.display(ordering="spent", description="Spent")
    def cost(self, project):
        return money(project.spent)

    @admin.display(ordering="run_state", description="Run")
    def run_state(self, project):
        return project.run_state or "—"

    # Every action goes through the services the web page uses, and says exact counts. Each
    # starts, stops or pays for work: staff need the change permission (a view-only operator
    # sees no action; Django's "Delete selected" needs the delete permission).

    @admin.action(description="Generate missing illustrations", permissions=["change"])
    def generate_missing(self, request, queryset):
        self._queue_each(request, queryset, services.generate_missing, "Queued", "illustration")

    @admin.action(description="Generate missing clips", permissions=["change"])
    def generate_missing_clips(self, request, queryset):
        self._queue_each(request, queryset, services.generate_missing_clips, "Queued", "clip")

    @admin.action(description="Retry failed illustrations", permissions=["change"])
    def retry_failed(self, request, queryset):
        self._queue_each(
            request, queryset, services.retry_failed, "Retrying", "failed illustration"
        )

    def _queue_each(self, request, queryset, control, verb: str, word: str) -> None:
        results = [control(project=p, requested_by=request.user) for p in queryset]
        queued = sum(r.count for r in results)
        projects = sum(1 for r in results if r.count)
        self.message_user(
            request, f"{verb} {plural(queued, word)} across {plural(projects, 'project')}."
        )

    @admin.action(description="Stop generation", permissions=["change"])
    def stop(self, request, queryset):
        stopped = sum(1 for p in queryset if services.stop(project=p).run is not None)
        self.message_user(request, f"Stopped {plural(stopped, 'run')}.", messages.WARNING)

    @admin.action(description="Pause generation", permissions=["change"])
    def pause(self, request, queryset):
        paused = sum(1 for p in queryset if services.pause(project=p).run is not None)
        self.message_user(request, f"Paused {plural(paused, 'run')}.", messages.WARNING)

    @admin.action(description="Resume paused or halted generation", permissions=["change"])
    def resume(self, request, queryset):
        resumed = sum(1 for p in queryset if services.resume(project=p).run is not None)
        self.message_user(request, f"Resumed {plural(resumed, 'run')}.")


class ReferenceImageInline(admin.TabularInline):
    model = ReferenceImage
    extra = 0
    fields = ["image", "source", "content_type", "width", "height", "created_at"]
    readonly_fields = fields
    can_delete = False  # the Characters page deletes a version with its file, never the chosen


@admin.register(Character)
class CharacterAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "kind", "every_page", "reference"]
    list_filter = ["kind", "every_page"]
    list_select_related = ["project"]
    search_fields = ["name", "aliases", "project__title"]
    raw_id_fields = ["project", "reference", "pages"]
    inlines = [ReferenceImageInline]

    def delete_model(self, request, obj):
        # The Characters page's deletion, so its pictures' files go too once it commits.
        try:
            character_services.delete_character(character=obj)
        except character_services.CharacterError as error:
            self.message_user(request, str(error), messages.ERROR)

    def delete_queryset(self, request, queryset):
        for character in queryset:
            self.delete_model(request, character)
