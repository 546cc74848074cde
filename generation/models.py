"""The work: runs, illustration jobs and every call made to an image service.

The truth lives here, never only in a worker's memory: a row always says what is
happening to a page and when its next try is due.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from studio.models import Page, Project


class Run(models.Model):
    """One push to illustrate a project's missing pages, with the state editors steer."""

    class State(models.TextChoices):
        RUNNING = "running"
        PAUSED = "paused"
        STOPPING = "stopping"
        STOPPED = "stopped"
        HALTED = "halted"
        FINISHED = "finished"

    class HaltReason(models.TextChoices):
        OUT_OF_CREDITS = "out_of_credits", "Out of credits"
        AUTH = "auth", "Authentication failed"
        OUTAGE = "outage", "Service outage"
        BUDGET = "budget", "Budget reached"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="runs")
    state = models.CharField(max_length=10, choices=State, default=State.RUNNING)
    halt_reason = models.CharField(max_length=20, choices=HaltReason, blank=True)
    message = models.TextField(blank=True)
    # Transient failures in a row across the run's pages; a success resets it.
    consecutive_failures = models.PositiveIntegerField(default=0)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # A project has at most one run that is not over: new work joins it.
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(state__in=["running", "paused", "stopping", "halted"]),
                name="one_open_run_per_project",
            ),
        ]

    def __str__(self) -> str:
        return f"Run {self.pk} of {self.project} ({self.state})"


OPEN_RUN_STATES = (Run.State.RUNNING, Run.State.PAUSED, Run.State.STOPPING, Run.State.HALTED)


def illustration_upload_to(instance: "Illustration", filename: str) -> str:
    # Unguessable names: images are private to their project's owner.
    return f"illustrations/{instance.page.project_id}/{uuid.uuid4().hex}.png"


class Job(models.Model):
    """What every kind of job shares: the state a worker claims, leases and ends.

    The engine works on any subclass through generation.kinds; only what a job makes
    (a picture, a story) differs.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        GENERATING = "generating"
        RETRYING = "retrying"
        COMPLETE = "complete"
        FAILED = "failed"
        CANCELED = "canceled"
        # A complete illustration that a newer one of the same page took over from.
        REPLACED = "replaced"

    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="%(class)ss"
    )
    status = models.CharField(max_length=10, choices=Status, default=Status.QUEUED)
    # Higher goes first: "generate this page next".
    priority = models.IntegerField(default=0)
    provider = models.CharField(max_length=40, blank=True)
    model = models.CharField(max_length=80, blank=True)

    # Attempts that count against this job (a call that halted the run does not).
    attempts_made = models.PositiveSmallIntegerField(default=0)
    claimed_by = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.CharField(max_length=20, blank=True)
    error_message = models.TextField(blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES


ACTIVE_STATUSES = (Job.Status.QUEUED, Job.Status.GENERATING, Job.Status.RETRYING)


class Illustration(Job):
    """One job to illustrate one page; when complete, it holds the image."""

    page = models.ForeignKey(Page, on_delete=models.CASCADE, related_name="illustrations")
    image = models.ImageField(upload_to=illustration_upload_to, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    prompt_sent = models.TextField(blank=True)
    size = models.CharField(max_length=20, blank=True)

    class Meta(Job.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["page"],
                condition=Q(status__in=["queued", "generating", "retrying"]),
                name="one_active_job_per_page",
            ),
            # The page's current picture; a regenerated one replaces it when complete.
            models.UniqueConstraint(
                fields=["page"],
                condition=Q(status="complete"),
                name="one_current_illustration_per_page",
            ),
        ]
        indexes = [
            models.Index(fields=["run", "status", "-priority"], name="illustration_claim_idx"),
            models.Index(fields=["page", "status"], name="illustration_page_status_idx"),
            models.Index(fields=["status", "lease_expires_at"], name="illustration_lease_idx"),
        ]

    def __str__(self) -> str:
        return f"Illustration {self.pk} of {self.page} ({self.status})"


class StoryJob(Job):
    """The story phase: a text service writes a project's pages from a premise."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="story_jobs")
    premise = models.TextField()
    audience = models.CharField(max_length=200, blank=True)
    pages_wanted = models.PositiveSmallIntegerField()
    prompt_sent = models.TextField(blank=True)
    pages_written = models.PositiveSmallIntegerField(default=0)

    class Meta(Job.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(status__in=["queued", "generating", "retrying"]),
                name="one_active_story_job_per_project",
            ),
        ]
        indexes = [
            models.Index(fields=["run", "status", "-priority"], name="story_claim_idx"),
            models.Index(fields=["status", "lease_expires_at"], name="story_lease_idx"),
        ]

    def __str__(self) -> str:
        return f"Story of {self.project} ({self.status})"


def clip_upload_to(instance: "Clip", filename: str) -> str:
    return f"clips/{instance.page.project_id}/{uuid.uuid4().hex}.{filename.rsplit('.', 1)[-1]}"


class Clip(Job):
    """One job to animate a page's complete illustration into a short clip."""

    page = models.ForeignKey(Page, on_delete=models.CASCADE, related_name="clips")
    source = models.ForeignKey(
        Illustration, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    video = models.FileField(upload_to=clip_upload_to, blank=True)
    content_type = models.CharField(max_length=40, blank=True)
    prompt_sent = models.TextField(blank=True)
    # The service's own job id, stored before the first poll: a worker that takes over
    # resumes polling this job instead of paying for a second one.
    provider_job_id = models.CharField(max_length=120, blank=True)

    class Meta(Job.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["page"],
                condition=Q(status__in=["queued", "generating", "retrying"]),
                name="one_active_clip_per_page",
            ),
            models.UniqueConstraint(
                fields=["page"], condition=Q(status="complete"), name="one_current_clip_per_page"
            ),
        ]
        indexes = [
            models.Index(fields=["run", "status", "-priority"], name="clip_claim_idx"),
            models.Index(fields=["page", "status"], name="clip_page_status_idx"),
            models.Index(fields=["status", "lease_expires_at"], name="clip_lease_idx"),
        ]

    def __str__(self) -> str:
        return f"Clip {self.pk} of {self.page} ({self.status})"


class ProviderGate(models.Model):
    """Limits shared by every worker on every machine: one row per provider (and model),
    and one per project that lowers them. Holds the token bucket and the cool-down."""

    key = models.CharField(max_length=120, unique=True)  # "openai:gpt-image-1", "project:7"
    tokens = models.FloatField(default=0)
    refilled_at = models.DateTimeField(null=True, blank=True)
    cooldown_until = models.DateTimeField(null=True, blank=True)
    cooldown_reason = models.CharField(max_length=300, blank=True)

    def __str__(self) -> str:
        return self.key


class ProviderSlot(models.Model):
    """One call in flight, held until it returns (or its lease runs out, if the worker died)."""

    provider_key = models.CharField(max_length=120)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    # What the call will cost if it succeeds, held against the project's budget meanwhile.
    reserved = models.DecimalField(max_digits=10, decimal_places=4, default=0)
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["provider_key", "expires_at"]),
            models.Index(fields=["project", "expires_at"]),
        ]

    def __str__(self) -> str:
        return f"Slot on {self.provider_key} until {self.expires_at:%H:%M:%S}"


class GenerationAttempt(models.Model):
    """One call to an image service, written for every call, whatever its outcome."""

    class Outcome(models.TextChoices):
        IN_FLIGHT = "in_flight", "In flight"
        SUCCESS = "success"
        TRANSIENT = "transient"
        RATE_LIMITED = "rate_limited", "Rate limited"
        OUT_OF_CREDITS = "out_of_credits", "Out of credits"
        AUTH = "auth", "Authentication failed"
        REJECTED = "rejected"
        LOST = "lost", "Worker lost"
        INTERRUPTED = "interrupted"

    # Exactly one of these names the job the call was made for.
    illustration = models.ForeignKey(
        Illustration, null=True, blank=True, on_delete=models.CASCADE, related_name="attempts"
    )
    story = models.ForeignKey(
        StoryJob, null=True, blank=True, on_delete=models.CASCADE, related_name="attempts"
    )
    clip = models.ForeignKey(
        Clip, null=True, blank=True, on_delete=models.CASCADE, related_name="attempts"
    )
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome, default=Outcome.IN_FLIGHT)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=80, blank=True)
    message = models.TextField(blank=True)
    retry_after = models.FloatField(null=True, blank=True)
    provider_request_id = models.CharField(max_length=120, blank=True)
    # What the service charges for this call (a configured price per image; failed calls
    # cost nothing).
    cost = models.DecimalField(max_digits=10, decimal_places=4, default=0)

    class Meta:
        ordering = ["illustration", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["illustration", "number"], name="attempt_number_unique"
            ),
            models.UniqueConstraint(fields=["story", "number"], name="story_attempt_number_unique"),
            models.UniqueConstraint(fields=["clip", "number"], name="clip_attempt_number_unique"),
            models.CheckConstraint(
                condition=Q(illustration__isnull=False, story__isnull=True, clip__isnull=True)
                | Q(illustration__isnull=True, story__isnull=False, clip__isnull=True)
                | Q(illustration__isnull=True, story__isnull=True, clip__isnull=False),
                name="attempt_belongs_to_one_job",
            ),
        ]
        indexes = [models.Index(fields=["outcome", "started_at"])]

    def __str__(self) -> str:
        return f"Attempt {self.number} of {self.job}: {self.outcome}"

    @property
    def job(self):
        return self.illustration or self.story or self.clip
