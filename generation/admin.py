from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from studio.files import private_file
from studio.text import plural

from . import accounts, services, thumbnails
from .models import (
    Batch,
    Clip,
    CoverJob,
    GenerationAttempt,
    Illustration,
    ProviderAccount,
    Run,
    SheetJob,
    StoryJob,
    Upscale,
)


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class AttemptInline(ReadOnlyInline):
    model = GenerationAttempt
    fields = [
        "number",
        "started_at",
        "duration_ms",
        "outcome",
        "http_status",
        "error_code",
        "retry_after",
        "message",
        "provider_request_id",
    ]
    readonly_fields = fields
    ordering = ["number"]


@admin.register(Illustration)
class IllustrationAdmin(admin.ModelAdmin):
    list_display = [
        "thumbnail",
        "id",
        "page",
        "status",
        "attempts_made",
        "failure_reason",
        "last_error",
        "created_at",
    ]
    list_display_links = ["id"]
    list_filter = ["status", "failure_reason", "attempts__outcome", "provider", "created_at"]
    search_fields = ["page__project__title", "error_message", "prompt_sent"]
    list_select_related = ["page__project"]
    raw_id_fields = ["page", "run"]
    readonly_fields = ["thumbnail", "claimed_by", "lease_expires_at", "next_attempt_at"]
    inlines = [AttemptInline]
    actions = ["retry_selected", "regenerate_selected"]

    def get_queryset(self, request):
        # attempts__outcome filters across a join: one row per illustration all the same.
        return super().get_queryset(request).distinct()

    def get_urls(self):
        view = self.admin_site.admin_view(self.thumbnail_view)
        return [
            path("<int:pk>/thumbnail/", view, name="generation_illustration_thumbnail"),
            *super().get_urls(),
        ]

    def thumbnail_view(self, request, pk):
        if not self.has_view_permission(request):
            raise PermissionDenied
        illustration = get_object_or_404(Illustration, pk=pk)
        if not illustration.image:
            raise Http404("No image")
        return private_file(thumbnails.ensure_thumbnail(illustration.image), "image/webp")

    @admin.display(description="Picture")
    def thumbnail(self, illustration):
        if not illustration.image:
            return "—"
        url = reverse("admin:generation_illustration_thumbnail", args=[illustration.pk])
        return format_html('<img src="{}" alt="" width="64" height="64" loading="lazy">', url)

    @admin.display(description="Last error")
    def last_error(self, illustration):
        message = illustration.error_message
        return (message[:117] + "…") if len(message) > 120 else message or "—"

    @admin.action(description="Retry selected (pages without a picture)", permissions=["change"])
    def retry_selected(self, request, queryset):
        queued = self._queue(request, queryset, regenerate=False)
        self.message_user(request, f"Queued {plural(queued, 'illustration')}.")

    @admin.action(
        description="Regenerate selected (old pictures stay until the new are done)",
        permissions=["change"],
    )
    def regenerate_selected(self, request, queryset):
        # Approved pages are locked against bulk actions: they are redrawn one by one.
        approved = Illustration.objects.filter(
            page__in=queryset.values("page"),
            status=Illustration.Status.COMPLETE,
            approved_at__isnull=False,
        ).values("page")
        skipped = queryset.filter(page__in=approved).values("page").distinct().count()
        queued = self._queue(request, queryset.exclude(page__in=approved), regenerate=True)
        message = f"Queued {plural(queued, 'illustration')} to draw again."
        if skipped:
            message += (
                f" Skipped {plural(skipped, 'approved page')}: regenerate an approved page "
                f"on its own, from the review page."
            )
        self.message_user(request, message)

    def _queue(self, request, queryset, *, regenerate: bool) -> int:
        pages = {job.page for job in queryset.select_related("page__project")}
        return sum(
            services.queue_page(page=page, requested_by=request.user, regenerate=regenerate).count
            for page in pages
        )


@admin.register(GenerationAttempt)
class GenerationAttemptAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "job",
        "number",
        "outcome",
        "http_status",
        "error_code",
        "started_at",
        "duration_ms",
    ]
    list_filter = ["outcome", "http_status", "started_at"]
    date_hierarchy = "started_at"
    search_fields = ["message", "error_code", "provider_request_id"]
    list_select_related = ["illustration__page__project", "story__project", "clip__page__project"]

    @admin.display(description="Job")
    def job(self, attempt):
        return attempt.job

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "state", "halt_reason", "created_at", "finished_at"]
    list_filter = ["state", "halt_reason", "created_at"]
    search_fields = ["project__title", "message"]
    list_select_related = ["project"]
    raw_id_fields = ["project", "requested_by"]
    readonly_fields = ["state", "halt_reason", "message", "halted_account"]


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    """Economy mode's batches, read-only: the service's own id and files, its status and
    counts (Stop on the project cancels one; nothing here changes them)."""

    list_display = [
        "id",
        "project_id",
        "provider",
        "model",
        "step",
        "status",
        "completed",
        "total",
        "reason",
    ]
    list_filter = ["step", "status", "provider"]
    search_fields = ["batch_id", "input_file_id"]

    @admin.display(description="Reason")
    def reason(self, batch):
        """Why it waits to be sent (its step failed and is tried again later), or how it
        ended; its page shows the whole of it."""
        message = batch.message
        return (message[:197] + "…") if len(message) > 200 else message or "—"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class StoryAttemptInline(AttemptInline):
    fk_name = "story"


@admin.register(StoryJob)
class StoryJobAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "status", "pages_wanted", "pages_written", "created_at"]
    list_filter = ["status", "failure_reason"]
    list_select_related = ["project"]
    raw_id_fields = ["project", "run"]
    inlines = [StoryAttemptInline]


class SheetAttemptInline(AttemptInline):
    fk_name = "sheet"


@admin.register(SheetJob)
class SheetJobAdmin(admin.ModelAdmin):
    """Character sheets drawn by the image services, with every call."""

    list_display = ["id", "character", "status", "provider", "reference", "created_at"]
    list_filter = ["status", "failure_reason"]
    list_select_related = ["character"]
    raw_id_fields = ["character", "run", "reference"]
    inlines = [SheetAttemptInline]


class UpscaleAttemptInline(AttemptInline):
    fk_name = "upscale"


@admin.register(Upscale)
class UpscaleAdmin(admin.ModelAdmin):
    """The print export's upscales (print-only pictures kept beside a page's), with every
    call."""

    list_display = ["id", "page", "status", "provider", "model", "scale", "width", "created_at"]
    list_filter = ["status", "failure_reason"]
    list_select_related = ["page"]
    raw_id_fields = ["page", "run", "source"]
    inlines = [UpscaleAttemptInline]


class CoverAttemptInline(AttemptInline):
    fk_name = "cover"


@admin.register(CoverJob)
class CoverJobAdmin(admin.ModelAdmin):
    """Front covers' own pictures drawn by the image services, with every call."""

    list_display = ["id", "project", "status", "provider", "created_at"]
    list_filter = ["status", "failure_reason"]
    list_select_related = ["project"]
    raw_id_fields = ["project", "run"]
    inlines = [CoverAttemptInline]


admin.site.site_header = "Illustration Studio operations"


@admin.register(ProviderAccount)
class ProviderAccountAdmin(admin.ModelAdmin):
    """Provider accounts as every worker sees them: ok, cooling down until a time, or
    halted (out of credits, key refused, configuration, outage) with the next probe."""

    list_display = ["label", "state_shown", "reason", "failures_in_row", "next_probe_at"]
    list_filter = ["state", "reason"]
    readonly_fields = [
        "key",
        "provider",
        "endpoint",
        "state",
        "reason",
        "message",
        "cooldown_until",
        "cooldown_reason",
        "failures_in_row",
        "next_probe_at",
        "probes",
        "halted_at",
    ]
    exclude = ["probe_by", "probe_started_at"]
    actions = ["resume"]

    @admin.display(description="State")
    def state_shown(self, account):
        state = accounts.state_of(account.key)
        if state["state"] == "cooling":
            return f"cooling down until {timezone.localtime(state['until']):%H:%M:%S}"
        if state["state"] == "halted" and state["until"]:
            return f"halted (next probe {timezone.localtime(state['until']):%H:%M:%S})"
        return state["state"]

    @admin.action(
        description="Resume: clear the halt and continue every run it halted",
        permissions=["change"],
    )
    def resume(self, request, queryset):
        resumed = [services.resume_account(account.key) for account in queryset]
        self.message_user(
            request,
            f"Resumed {plural(len(queryset), 'account')}, continuing "
            f"{plural(sum(resumed), 'run')}.",
        )

    def has_add_permission(self, request):
        return False


class ClipAttemptInline(AttemptInline):
    fk_name = "clip"


@admin.register(Clip)
class ClipAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "page",
        "status",
        "attempts_made",
        "provider_job_id",
        "failure_reason",
        "created_at",
    ]
    list_filter = ["status", "failure_reason", "provider"]
    search_fields = ["page__project__title", "provider_job_id", "error_message"]
    list_select_related = ["page__project"]
    raw_id_fields = ["page", "run", "source"]
    inlines = [ClipAttemptInline]
    actions = ["retry_selected", "regenerate_selected"]

    @admin.action(description="Retry selected (pages without a clip)", permissions=["change"])
    def retry_selected(self, request, queryset):
        pages = {clip.page for clip in queryset.select_related("page__project")}
        queued = sum(services.queue_clip(page=p, requested_by=request.user).count for p in pages)
        self.message_user(request, f"Queued {plural(queued, 'clip')}.")

    @admin.action(description="Regenerate selected clips", permissions=["change"])
    def regenerate_selected(self, request, queryset):
        pages = {clip.page for clip in queryset.select_related("page__project")}
        queued = sum(
            services.queue_clip(page=p, requested_by=request.user, regenerate=True).count
            for p in pages
        )
        self.message_user(request, f"Queued {plural(queued, 'clip')} to make again.")
