"""Content: an editor's projects, their pages, and their exports."""

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import ExpressionWrapper, F, Q
from django.db.models.functions import Now
from django.urls import reverse

from .changes import ProjectRowsQuerySet, watch
from .geometry import DEFAULT_TRIM, PAPER_LABELS, TRIM_HELP, validate_trim

# A book holds at most this many pages (storyboards with many shots): the review page,
# "Generate missing" and the manuscript import are measured at this size.
MAX_PAGES = 2000
# A page's text and its prompt, however they arrive: typed, imported or written by a text
# service.
MAX_PAGE_CHARS = 5000
MAX_PROMPT_CHARS = 4000


class ProjectQuerySet(models.QuerySet):
    """Projects, and the one place their change counters (Project.version) move:
    studio.changes moves them through these methods when the rows a review page shows
    change, and the few writers outside those paths call them directly."""

    def move_counters(self) -> int:
        """Move the change counter of every project in this queryset by one, in a single
        UPDATE. Return how many projects moved."""
        return self.update(version=F("version") + 1)

    def mark_changed(self, *project_ids: int | None) -> int:
        """Move the change counter of each given project by one (a single UPDATE, the ids
        sorted; None is skipped). Return how many projects moved."""
        ids = sorted({pk for pk in project_ids if pk is not None})
        if not ids:
            return 0
        return self.filter(pk__in=ids).move_counters()

    def mark_changed_with_open_runs(self) -> int:
        """Move the counter of every project with an open run: a provider account's state
        (a halt, a cool-down, a resume) shows on all of them, whichever account they use.

        Their rows are taken in id order, the order among projects of every writer that
        holds several (generation.machines, the lock order), in a transaction of their own
        or the caller's (no savepoint); call it holding no other project's row, and never
        an account's."""
        open_states = ["running", "paused", "stopping", "halted"]
        projects = self.filter(runs__state__in=open_states).values("pk")
        with transaction.atomic(using=self.db, savepoint=False):
            ids = list(
                self.select_for_update()
                .filter(pk__in=projects)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            return self.filter(pk__in=ids).move_counters()


class Project(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="projects"
    )
    title = models.CharField(max_length=200)
    style_guide = models.TextField(
        blank=True, help_text="Art style and recurring characters, added to every page prompt."
    )
    # Which image service draws this project's pictures (a name of
    # generation.providers.PROVIDERS); empty means the studio's default,
    # STUDIO_IMAGE_PROVIDER.
    image_service = models.CharField(max_length=40, blank=True)
    # The model of that service its pictures are drawn with (a model of the catalogue,
    # generation/catalogue.toml); empty means the service's configured model. Settings offer
    # a shut-down model's replacement here in one click.
    image_model = models.CharField(max_length=120, blank=True)
    # Spend and speed controls; empty means no limit beyond the studio's own.
    budget = models.DecimalField(
        max_digits=10,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Stop before an illustration would take spending past this (USD).",
    )
    max_concurrent = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="At most this many calls at once for this project."
    )
    requests_per_minute = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="At most this many calls a minute for this project."
    )
    # The printed book: its trim (a preset of studio.geometry or WxH in inches), the paper
    # the spine is measured for, the author on the title page and the cover, and the page
    # whose picture makes the front cover (empty: the first page with a picture).
    trim = models.CharField(
        max_length=20, default=DEFAULT_TRIM, help_text=TRIM_HELP, validators=[validate_trim]
    )
    paper = models.CharField(max_length=8, choices=list(PAPER_LABELS.items()), default="white")
    author = models.CharField(max_length=200, blank=True)
    cover_page = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="The page whose picture is on the front cover; empty: the first "
        "illustrated page.",
    )

    # Or the cover's own generated picture (generation.models.CoverJob), drawn from the
    # cover prompt (empty: one made from the title and the book's characters).
    class CoverSource(models.TextChoices):
        PAGE = "page", "A page's picture"
        GENERATED = "generated", "The cover's own generated picture"

    cover_source = models.CharField(max_length=10, choices=CoverSource, default=CoverSource.PAGE)
    cover_prompt = models.TextField(
        blank=True,
        max_length=2000,
        help_text="What the cover's own picture shows; empty: the title and the book's characters.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The change counter (studio.changes): moved by one in the same transaction as every
    # change the review page shows, so a tab that shows this version needs nothing new.
    version = models.BigIntegerField(default=0, editable=False)

    objects = ProjectQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return self.title

    def save(self, *args, **kwargs):
        # Only ProjectQuerySet's counter methods write the counter: a form saving a project
        # read before a worker's change must not move it back.
        if self.pk is not None and not self._state.adding and "update_fields" not in kwargs:
            fields = self._meta.concrete_fields
            kwargs["update_fields"] = [
                f.name for f in fields if not f.primary_key and f.name != "version"
            ]
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return reverse("project-detail", args=[self.pk])


class Page(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="pages")
    number = models.PositiveIntegerField()
    # An optional name editors number by: "Beat 1.1", "Scene 3 · Shot 2".
    label = models.CharField(max_length=80, blank=True)
    # An optional named part of the book: "Chapter 1", "Scene 4". Consecutive pages with
    # the same section are shown together on the review page.
    section = models.CharField(max_length=80, blank=True)
    text = models.TextField()
    prompt = models.TextField(
        blank=True, help_text="What to draw. Leave empty to illustrate the page text."
    )
    updated_at = models.DateTimeField(auto_now=True)

    objects = ProjectRowsQuerySet.as_manager()
    project_path = "project_id"

    class Meta:
        ordering = ["project", "number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="page_number_unique"),
            models.CheckConstraint(condition=models.Q(number__gte=1), name="page_number_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.project} · page {self.number}"

    @property
    def illustration_prompt(self) -> str:
        """Return what this page asks the image service to draw (without the style guide)."""
        return self.prompt_of(self.prompt, self.text)

    @staticmethod
    def prompt_of(prompt: str, text: str) -> str:
        """illustration_prompt from a page's prompt and text fields."""
        return prompt.strip() or text.strip()


def export_upload_to(instance: "Export", filename: str) -> str:
    return f"exports/{instance.project_id}/{uuid.uuid4().hex}/{filename}"


class ExportQuerySet(models.QuerySet):
    def alive(self) -> "ExportQuerySet":
        """Those whose worker spoke within STUDIO_EXPORT_STALE_MINUTES (the database's
        clock), or that have not started."""
        return self.exclude(_silent())

    def with_liveness(self) -> "ExportQuerySet":
        """Annotate `stale`: running, but its worker has been silent too long."""
        return self.annotate(
            stale=ExpressionWrapper(
                Q(status=Export.Status.RUNNING) & _silent(), output_field=models.BooleanField()
            )
        )

    def running_for(self, owner_id: int) -> "ExportQuerySet":
        """An editor's exports that are running (and alive): what counts toward the cap."""
        return self.filter(project__owner_id=owner_id, status=Export.Status.RUNNING).alive()


def _silent() -> Q:
    since = Now() - timedelta(minutes=settings.STUDIO_EXPORT_STALE_MINUTES)
    return Q(beat_at__lt=since) | Q(beat_at__isnull=True, created_at__lt=since)


class Export(models.Model):
    """A download of a project, made by a worker: a ZIP of pictures, a PDF book, the print
    files (interior and cover), or an EPUB."""

    class Format(models.TextChoices):
        ZIP = "zip", "ZIP of pictures and texts"
        PDF = "pdf", "PDF picture book (to read on screen)"
        PRINT = "print", "Print-ready interior PDF (full bleed)"
        COVER = "cover", "Print-ready wraparound cover PDF"
        EPUB = "epub", "Fixed-layout EPUB 3"

    class PageSize(models.TextChoices):
        A4 = "a4", "A4"
        LETTER = "letter", "Letter"
        SQUARE = "square", "Square (21 × 21 cm)"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        COMPLETE = "complete"
        FAILED = "failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="exports")
    format = models.CharField(max_length=5, choices=Format)
    page_size = models.CharField(max_length=6, choices=PageSize, default=PageSize.A4)
    # The print files' and the EPUB's trim and paper (the project's when it was asked for).
    trim = models.CharField(max_length=20, blank=True)
    paper = models.CharField(max_length=8, choices=list(PAPER_LABELS.items()), default="white")
    # Pictures under 300 DPI at their printed size are resampled (locally, Lanczos) to 300:
    # smoother edges at the printer, no added detail; the report says which.
    resample = models.BooleanField(default=False)
    # The resolution report: one entry per page under 300 DPI (page, pixels, dpi, resampled)
    # and per page whose text did not fit; written when the file is.
    report = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=8, choices=Status, default=Status.QUEUED)
    pages_total = models.PositiveIntegerField(default=0)
    pages_done = models.PositiveIntegerField(default=0)
    missing = models.PositiveIntegerField(default=0)
    file = models.FileField(upload_to=export_upload_to, blank=True, max_length=300)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The worker's last word (the database's clock): a running export silent for
    # STUDIO_EXPORT_STALE_MINUTES lost its worker, and reads as failed, with Retry.
    beat_at = models.DateTimeField(null=True, blank=True)

    objects = ExportQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_format_display()} of {self.project} ({self.status})"

    @property
    def percent(self) -> int:
        return int(100 * self.pages_done / self.pages_total) if self.pages_total else 0

    @property
    def shown_status(self) -> str:
        """The status the editor sees: a running export whose worker is gone has failed
        (needs the `stale` annotation of with_liveness())."""
        return self.Status.FAILED if getattr(self, "stale", False) else self.status

    @property
    def shown_error(self) -> str:
        if getattr(self, "stale", False):
            return (
                f"The export stopped: its worker has said nothing for "
                f"{settings.STUDIO_EXPORT_STALE_MINUTES:g} minutes."
            )
        return self.error


def reference_upload_to(instance: "ReferenceImage", filename: str) -> str:
    # Unguessable names, kept beside the project's other private files.
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else "png"
    return f"references/{instance.character.project_id}/{uuid.uuid4().hex}.{extension}"


class Character(models.Model):
    """Someone (or somewhere, something, or the book's look) that must stay the same from
    page to page: its reference picture is sent, labelled, with every page it appears on."""

    class Kind(models.TextChoices):
        CHARACTER = "character", "Character"
        SETTING = "setting", "Setting"
        PROP = "prop", "Prop"
        STYLE = "style", "Style reference"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="characters")
    name = models.CharField(max_length=80)
    # What must not change: species, colours, clothes.
    description = models.TextField(blank=True)
    # Other names the text uses for it ("Mrs. Rabbit, his mother"), comma-separated.
    aliases = models.CharField(max_length=300, blank=True)
    kind = models.CharField(max_length=10, choices=Kind, default=Kind.CHARACTER)
    # The version sent with pages; earlier versions are kept to pick from.
    reference = models.ForeignKey(
        "ReferenceImage", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The pages it appears on: suggested from their text, editable by the editor.
    pages = models.ManyToManyField(Page, related_name="characters", blank=True)
    # A main character goes with every page, tagged or not: pages that say "he" or "the
    # rabbit" never name it, and would be drawn without it.
    every_page = models.BooleanField(
        "On every page",
        default=False,
        help_text="Send its picture with every page, also those whose text does not name it "
        "(a main character).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ProjectRowsQuerySet.as_manager()
    project_path = "project_id"

    class Meta:
        ordering = ["project", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="character_name_unique"),
            # One picture sets the look of the whole book.
            models.UniqueConstraint(
                fields=["project"],
                condition=models.Q(kind="style"),
                name="one_style_reference_per_project",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def alias_list(self) -> list[str]:
        return [alias.strip() for alias in self.aliases.split(",") if alias.strip()]


class ReferenceImage(models.Model):
    """One version of a character's reference picture: uploaded or drawn by the studio."""

    class Source(models.TextChoices):
        UPLOAD = "upload", "Uploaded"
        DRAWN = "drawn", "Drawn by the studio"

    character = models.ForeignKey(Character, on_delete=models.CASCADE, related_name="versions")
    image = models.FileField(upload_to=reference_upload_to, max_length=200)
    content_type = models.CharField(max_length=20, default="image/png")
    source = models.CharField(max_length=10, choices=Source)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ProjectRowsQuerySet.as_manager()
    project_path = "character__project_id"

    class Meta:
        ordering = ["character", "-pk"]

    def __str__(self) -> str:
        return f"{self.character} · version {self.pk}"


class EditorSettings(models.Model):
    """An editor's own settings; no row means the defaults."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="studio_settings"
    )
    email_on_run_end = models.BooleanField(
        "Email me when a run ends",
        default=True,
        help_text="One email when a run finishes, halts or leaves failed pages.",
    )

    class Meta:
        verbose_name_plural = "editor settings"

    def __str__(self) -> str:
        return f"Settings of {self.user}"

    @classmethod
    def of(cls, user) -> "EditorSettings":
        """Return the user's settings (unsaved defaults when there is no row)."""
        return cls.objects.filter(user=user).first() or cls(user=user)


for _model in (Page, Character, ReferenceImage):
    watch(_model)


def _character_pages_changed(sender, instance, action, **kwargs) -> None:
    # A character added to or taken off a page changes its "Reference changed".
    if action in ("post_add", "post_remove", "post_clear"):
        Project.objects.mark_changed(getattr(instance, "project_id", None))


models.signals.m2m_changed.connect(
    _character_pages_changed, sender=Character.pages.through, weak=False
)
