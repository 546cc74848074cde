from django.contrib import admin

from .models import GenerationAttempt, Illustration, Run


class AttemptInline(admin.TabularInline):
    model = GenerationAttempt
    extra = 0
    can_delete = False
    readonly_fields = [f.name for f in GenerationAttempt._meta.fields]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Illustration)
class IllustrationAdmin(admin.ModelAdmin):
    list_display = ["id", "page", "status", "attempts_made", "failure_reason", "created_at"]
    list_filter = ["status", "failure_reason"]
    list_select_related = ["page__project"]
    raw_id_fields = ["page", "run"]
    inlines = [AttemptInline]


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "state", "halt_reason", "created_at", "finished_at"]
    list_filter = ["state", "halt_reason"]
    list_select_related = ["project"]
    raw_id_fields = ["project", "requested_by"]


@admin.register(GenerationAttempt)
class GenerationAttemptAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "illustration",
        "number",
        "outcome",
        "http_status",
        "started_at",
        "duration_ms",
    ]
    list_filter = ["outcome", "http_status", "started_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
