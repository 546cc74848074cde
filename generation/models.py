"""The work: runs, illustration jobs and every call made to an image service.

The truth lives here, never only in a worker's memory: a row always says what is
happening to a page and when its next try is due.
"""

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.functions import Now

from studio.changes import ProjectRowsQuerySet, watch
from studio.models import Character, Page, Project, ReferenceImage

from . import machines


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
        STORAGE = "storage", "Could not store a picture"
        CONFIG = "config", "Configuration"

    class Mode(models.TextChoices):
        NOW = "now", "Now"
        # The pages go to the service as one batch job (generation.batches): within 24 h,
        # at half price.
        ECONOMY = "economy", "Economy"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="runs")
    state = models.CharField(max_length=10, choices=State, default=State.RUNNING)
    mode = models.CharField(max_length=10, choices=Mode, default=Mode.NOW)
    halt_reason = models.CharField(max_length=20, choices=HaltReason, blank=True)
    message = models.TextField(blank=True)
    # The provider account whose halt halted this run (out of credits, auth, config,
    # outage): resuming the account resumes every run it halted.
    halted_account = models.CharField(max_length=200, blank=True)
    # The provider account its pictures are drawn through, as the worker that calls it
    # knows it (set when the run starts, corrected by the first worker whose environment
    # names another): status commands and pages read it, not their own environment.
    account = models.CharField(max_length=200, blank=True)
    # The end the owner was last told of ("finished", "halted"): set by one conditional
    # UPDATE, so several workers settling at once send one email, and an outage's probes
    # that halt the run again send none; Resume clears it.
    end_notice = models.CharField(max_length=10, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # Fair turns (generation.fairness): the studio-wide number of the last claim of one of
    # this run's jobs (0: never served; a counter, not a time, so claims made in the same
    # millisecond still take turns), how many claims it has had, and how many of those
    # first lost a race to another worker (the benchmark reports them per 1,000 claims).
    turn = models.PositiveBigIntegerField(default=0, db_index=True)
    claims = models.PositiveIntegerField(default=0)
    claim_conflicts = models.PositiveIntegerField(default=0)
    # The database's clock: the review page compares it with its poll cursor.
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = ProjectRowsQuerySet.as_manager()
    project_path = "project_id"

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


def run_is(*states: str) -> Exists:
    """Return a condition on a job row: its run is in one of the states.

    Conditions in compare-and-set UPDATEs must not join: Django turns a joined UPDATE into
    `WHERE id IN (SELECT ...)`, and PostgreSQL does not re-check such a subquery against
    the row it waited for, so two workers could both "win" the same job.
    """
    return Exists(Run.objects.filter(pk=OuterRef("run_id"), state__in=states))


def later(seconds: float | timedelta):
    """Return an expression for the database's clock plus a duration: the one clock that
    every process on every machine shares."""
    if not isinstance(seconds, timedelta):
        seconds = timedelta(seconds=seconds)
    return models.ExpressionWrapper(Now() + seconds, output_field=models.DateTimeField())


# A job on its way: what the one-active-job constraints hold (its names, for migrations).
ACTIVE_STATUS_NAMES = ["queued", "generating", "retrying", "awaiting"]


def one_active_per(*fields: str, name: str) -> models.UniqueConstraint:
    """A job kind's constraint: at most one of its jobs on its way per these fields, so a
    double click, or two editors at once, queues nothing twice."""
    return models.UniqueConstraint(
        fields=list(fields), condition=Q(status__in=ACTIVE_STATUS_NAMES), name=name
    )


def job_indexes(prefix: str, *more: models.Index) -> list[models.Index]:
    """A job kind's indexes: its run's next job by priority (the claim), any of its own,
    and the expired leases (the sweep), named "<prefix>_claim_idx" and "<prefix>_lease_idx"."""
    return [
        models.Index(fields=["run", "status", "-priority"], name=f"{prefix}_claim_idx"),
        *more,
        models.Index(fields=["status", "lease_expires_at"], name=f"{prefix}_lease_idx"),
    ]


def illustration_upload_to(instance: "Illustration", filename: str) -> str:
    # Unguessable names: images are private to their project's owner.
    return f"illustrations/{instance.page.project_id}/{uuid.uuid4().hex}.png"


class JobQuerySet(ProjectRowsQuerySet):
    """Every change of a job's state, each one conditional UPDATE made from the job's
    table in generation.machines.

    Each transition names the claim it needs (status, the worker's id, the run's state) in
    its WHERE clause and returns the rows it changed: 0 means the job was not in that
    state (another worker has it, its lease was reclaimed, its run stopped), and the
    caller must then change and call nothing. Times come from the database's clock.
    """

    def _move(self, name: str, *, worker_id: str | None = None, now=None, **fields) -> int:
        return machines.JOB.move(self, name, context={"worker_id": worker_id, "now": now}, **fields)

    def held_by(self, worker_id: str):
        return self.filter(claimed_by=worker_id, status__in=WORKING_STATUSES)

    def claim(self, *, worker_id: str, lease: float) -> int:
        """queued → generating for this worker, only while the job's run is running."""
        return self._move(
            "claim",
            claimed_by=worker_id,
            lease_expires_at=later(lease),
            next_attempt_at=None,
            waiting_for="",
            started_at=Now(),
            updated_at=Now(),
        )

    def renew(self, *, worker_id: str, lease: float, running: bool = False, **fields) -> int:
        """Extend the worker's lease: a beat (with running, only while the run is running;
        a call already in flight is kept whatever happens to the run).

        A beat writes nothing a page shows, unless its lease had run out meanwhile (the
        worker was silent for three beats, and the sweep has not taken the job back yet):
        then the card said "Waiting for the worker", and this second statement makes the
        change show."""
        if fields:
            fields.setdefault("updated_at", Now())
        suffix = "_running" if running else ""
        context = {"worker_id": worker_id, "lease_expires_at": later(lease)}
        return self._move(f"renew{suffix}", **context, **fields) or self._move(
            f"revive{suffix}", **context, **{**fields, "updated_at": Now()}
        )

    def start_attempt(self, *, worker_id: str, lease: float, **recorded) -> int:
        """Before a call: generating again (after a retry wait), lease renewed, only while
        the run is running."""
        return self._move(
            "start_attempt",
            worker_id=worker_id,
            lease_expires_at=later(lease),
            next_attempt_at=None,
            updated_at=Now(),
            **recorded,
        )

    def wait_to_retry(self, *, worker_id: str, wait: float, lease: float) -> int:
        """generating → retrying, showing when the next try is due."""
        return self._move(
            "wait_to_retry",
            worker_id=worker_id,
            next_attempt_at=later(wait),
            lease_expires_at=later(lease),  # the wait beats too (wait_unless_interrupted)
            updated_at=Now(),
        )

    def count_attempt(self) -> int:
        """One more attempt counts against the job (a call that failed or was lost)."""
        return self.update(attempts_made=F("attempts_made") + 1, updated_at=Now())

    def defer(self, *, worker_id: str, wait: float, waiting_for: str = "") -> int:
        """Back to the queue with the time of its next try (a long Retry-After, a rate
        limit's next token) and what it waits for, which its card shows."""
        return self._move(
            "defer",
            worker_id=worker_id,
            claimed_by="",
            lease_expires_at=None,
            next_attempt_at=later(wait),
            waiting_for=waiting_for,
            updated_at=Now(),
        )

    def release(self, *, worker_id: str | None = None, now=None, **fields) -> tuple[int, int]:
        """Give jobs back: canceled where their run stopped (or is gone), queued again
        where it may resume. With worker_id, only that worker's job; without, the jobs of
        this queryset whose lease expired (the sweep's). Return (requeued, canceled)."""
        names = ("give_back", "give_back_stopped") if worker_id else ("reclaim", "reclaim_stopped")
        released = {
            "claimed_by": "",
            "lease_expires_at": None,
            "next_attempt_at": None,
            "updated_at": Now(),
            **fields,
        }
        canceled = self._move(names[1], worker_id=worker_id, now=now, finished_at=Now(), **released)
        requeued = self._move(names[0], worker_id=worker_id, now=now, **released)
        return requeued, canceled

    def fail(
        self, *, worker_id: str | None = None, reason: str, message: str, now=None, **fields
    ) -> int:
        """Failed for good (until an editor retries), with the reason shown: by the worker
        that holds it, or (without worker_id) by the sweep, its lease expired."""
        return self._move(
            "fail" if worker_id else "reclaim_failed",
            worker_id=worker_id,
            now=now,
            **fields,
            failure_reason=reason,
            error_message=message[:2000],
            claimed_by="",
            lease_expires_at=None,
            next_attempt_at=None,
            finished_at=Now(),
            updated_at=Now(),
        )

    def complete(
        self, *, worker_id: str, status: str = "complete", unheld: bool = False, **fields
    ) -> int:
        """Complete, keeping what the call made, only while the worker holds the job (with
        status "replaced": kept as a version, not made the page's current one). With
        unheld, a queued job nobody holds: its paid picture is in storage already."""
        names = (
            ("keep_unheld_as_version", "complete_unheld")
            if unheld
            else (
                "keep_as_version",
                "complete",
            )
        )
        return self._move(
            names[0] if status == Job.Status.REPLACED else names[1],
            worker_id=worker_id,
            attempts_made=F("attempts_made") + 1,
            claimed_by="",
            lease_expires_at=None,
            failure_reason="",
            error_message="",
            finished_at=Now(),
            updated_at=Now(),
            **fields,
        )

    def cancel_queued(self) -> int:
        """Queued jobs of a stopped run are canceled; jobs in flight finish."""
        return self._move("cancel_queued", finished_at=Now(), updated_at=Now())

    def await_service(self, *, worker_id: str, overdue: float, note: str = "") -> int:
        """generating → awaiting: the service makes the picture and calls a webhook when it
        ends; the worker lets the job go at once. After `overdue` seconds without one, the
        sweep polls it."""
        return self._move(
            "await_service",
            worker_id=worker_id,
            claimed_by="",
            lease_expires_at=None,
            next_attempt_at=later(overdue),
            waiting_for="",
            progress_note=note[:120],
            updated_at=Now(),
        )

    def wake(self, *, overdue: bool = False, now=None) -> int:
        """awaiting → queued, due at once: its webhook came (or, with overdue, the time it
        should have come by has passed), and a worker fetches the result."""
        return self._move(
            "overdue" if overdue else "delivered",
            now=now,
            next_attempt_at=None,
            updated_at=Now(),
        )

    def cancel_awaiting(self) -> int:
        """Stop: jobs waiting at the service are canceled (and their service jobs too, by
        the caller)."""
        return self._move(
            "cancel_awaiting", next_attempt_at=None, finished_at=Now(), updated_at=Now()
        )

    def expired(self, *, now=None):
        """Jobs whose worker stopped renewing its lease (killed, or cut off); never a page
        a batch holds (economy mode): its journal row is the batch's, closed by its results,
        however long the clusters were away."""
        return self.filter(
            status__in=WORKING_STATUSES, lease_expires_at__lt=now if now is not None else Now()
        ).exclude(claimed_by__startswith="batch:")

    def replace_current(self, *, page_id: int) -> int:
        """The page's complete job steps aside for a newer one (a regeneration)."""
        return self.filter(page_id=page_id)._move("step_aside", updated_at=Now())


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
        # A complete illustration that a newer one of the same page took over from (or a
        # variant the editor has not picked): a version of the page's picture.
        REPLACED = "replaced"
        # A version whose picture the editor deleted; its calls stay in the history.
        DISCARDED = "discarded"
        # Being made at the service, which calls a webhook when it ends: no worker holds it
        # (generation.webhooks); next_attempt_at is when the sweep polls it if none came.
        AWAITING = "awaiting"

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
    # Since when the service has answered this job with rate limits only: waiting, not
    # failing, for up to STUDIO_RATE_LIMIT_PATIENCE.
    rate_limited_since = models.DateTimeField(null=True, blank=True)
    # An asynchronous service's own job id (a Replicate prediction, a fal request),
    # stored before the first poll: a worker that takes over resumes polling this one
    # instead of paying for a second.
    provider_job_id = models.CharField(max_length=120, blank=True)
    # What that service says of the job while it waits ("In queue (position 3)").
    progress_note = models.CharField(max_length=120, blank=True)
    # Which shared limit holds the claimed job back before its call ("12 a minute",
    # "2 at a time"), with next_attempt_at the time a slot may be free: the card says
    # "Waiting for the service", not "Generating". Empty once the call goes out.
    waiting_for = models.CharField(max_length=120, blank=True)

    # Stamped by the database's clock, on creation and by every transition, so the review
    # page's poll (which looks for rows changed since its cursor) misses none whatever
    # the clocks of the machines that changed them.
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES


ACTIVE_STATUSES = (
    Job.Status.QUEUED,
    Job.Status.GENERATING,
    Job.Status.RETRYING,
    Job.Status.AWAITING,
)
# A worker holds the job (a call in flight, or a wait before the next one).
WORKING_STATUSES = (Job.Status.GENERATING, Job.Status.RETRYING)


class Illustration(Job):
    """One job to illustrate one page; when complete, it holds the image."""

    page = models.ForeignKey(Page, on_delete=models.CASCADE, related_name="illustrations")
    project_path = "page__project_id"
    image = models.ImageField(upload_to=illustration_upload_to, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    prompt_sent = models.TextField(blank=True)
    size = models.CharField(max_length=20, blank=True)
    # 0 for an ordinary job; 1..4 for the candidates of "Try N variants", which complete
    # as versions beside the current picture instead of replacing it.
    variant = models.PositiveSmallIntegerField(default=0)
    # A variant waiting for the editor to pick among its group (the page's candidates).
    candidate = models.BooleanField(default=False)
    # When the editor approved this picture as the page's; only a current picture is
    # approved, and the mark goes when it stops being current (a new picture is a new row).
    approved_at = models.DateTimeField(null=True, blank=True)
    # The reference pictures sent with it, in order: [{"character": id, "reference": id,
    # "name": …, "kind": …, "description": …}]. A page whose characters now have another
    # chosen picture or description reads "Reference changed".
    references_sent = models.JSONField(default=list, blank=True)

    class Meta(Job.Meta):
        constraints = [
            # One active job per page and variant slot: ordinary work is slot 0, so a
            # double click still queues nothing twice; "Try 3 variants" fills slots 1..3,
            # each its own job that the engine claims, leases and retries once.
            one_active_per("page", "variant", name="one_active_job_per_page_slot"),
            models.CheckConstraint(
                condition=Q(variant__lte=4), name="illustration_variant_at_most_4"
            ),
            # The page's current picture; a regenerated one replaces it when complete.
            models.UniqueConstraint(
                fields=["page"],
                condition=Q(status="complete"),
                name="one_current_illustration_per_page",
            ),
        ]
        indexes = job_indexes(
            "illustration",
            models.Index(fields=["page", "status"], name="illustration_page_status_idx"),
        )

    def __str__(self) -> str:
        return f"Illustration {self.pk} of {self.page} ({self.status})"


class StoryJob(Job):
    """The story phase: a text service writes a project's pages from a premise."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="story_jobs")
    project_path = "project_id"
    premise = models.TextField()
    audience = models.CharField(max_length=200, blank=True)
    pages_wanted = models.PositiveSmallIntegerField()
    prompt_sent = models.TextField(blank=True)
    pages_written = models.PositiveSmallIntegerField(default=0)

    class Meta(Job.Meta):
        constraints = [
            one_active_per("project", name="one_active_story_job_per_project"),
        ]
        indexes = job_indexes("story")

    def __str__(self) -> str:
        return f"Story of {self.project} ({self.status})"


def clip_upload_to(instance: "Clip", filename: str) -> str:
    return f"clips/{instance.page.project_id}/{uuid.uuid4().hex}.{filename.rsplit('.', 1)[-1]}"


class Clip(Job):
    """One job to animate a page's complete illustration into a short clip."""

    page = models.ForeignKey(Page, on_delete=models.CASCADE, related_name="clips")
    project_path = "page__project_id"
    source = models.ForeignKey(
        Illustration, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    video = models.FileField(upload_to=clip_upload_to, blank=True)
    content_type = models.CharField(max_length=40, blank=True)
    prompt_sent = models.TextField(blank=True)

    class Meta(Job.Meta):
        constraints = [
            one_active_per("page", name="one_active_clip_per_page"),
            models.UniqueConstraint(
                fields=["page"], condition=Q(status="complete"), name="one_current_clip_per_page"
            ),
        ]
        indexes = job_indexes(
            "clip", models.Index(fields=["page", "status"], name="clip_page_status_idx")
        )

    def __str__(self) -> str:
        return f"Clip {self.pk} of {self.page} ({self.status})"


class SheetJob(Job):
    """One job to draw a character sheet (front, three-quarter and back view on a plain
    background); when complete, it adds a version to the character's reference pictures."""

    character = models.ForeignKey(Character, on_delete=models.CASCADE, related_name="sheet_jobs")
    project_path = "character__project_id"
    prompt_sent = models.TextField(blank=True)
    size = models.CharField(max_length=20, blank=True)
    # The version it made (the picture lives there, with the character's other versions).
    reference = models.ForeignKey(
        ReferenceImage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta(Job.Meta):
        constraints = [
            one_active_per("character", name="one_active_sheet_per_character"),
        ]
        indexes = job_indexes("sheet")

    def __str__(self) -> str:
        return f"Sheet of {self.character} ({self.status})"


def upscale_upload_to(instance: "Upscale", filename: str) -> str:
    return f"upscales/{instance.page.project_id}/{uuid.uuid4().hex}.png"


class Upscale(Job):
    """One job to upscale a page's picture for print through a service (the print export's
    upscale step): a print-only derivative kept beside its source picture, never a version
    of the page's picture. The print files use the latest complete one of the page's
    current picture; choosing another picture leaves it aside."""

    page = models.ForeignKey(Page, on_delete=models.CASCADE, related_name="upscales")
    project_path = "page__project_id"
    source = models.ForeignKey(Illustration, on_delete=models.CASCADE, related_name="upscales")
    scale = models.PositiveSmallIntegerField(default=4)
    image = models.ImageField(upload_to=upscale_upload_to, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)

    class Meta(Job.Meta):
        constraints = [
            one_active_per("source", name="one_active_upscale_per_picture"),
        ]
        indexes = job_indexes("upscale")

    def __str__(self) -> str:
        return f"Upscale {self.pk} of {self.page} ({self.status})"


def cover_upload_to(instance: "CoverJob", filename: str) -> str:
    return f"covers/{instance.project_id}/{uuid.uuid4().hex}.png"


class CoverJob(Job):
    """One job to draw the front cover's own picture (the editor's cover prompt, or one
    drawn from the title and the book's characters). Every one drawn is kept; the latest
    complete one is the project's generated cover, which the cover PDF uses when the
    project says so (Project.cover_source)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="cover_jobs")
    project_path = "project_id"
    prompt_sent = models.TextField(blank=True)
    size = models.CharField(max_length=20, blank=True)
    image = models.ImageField(upload_to=cover_upload_to, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)

    class Meta(Job.Meta):
        constraints = [
            one_active_per("project", name="one_active_cover_per_project"),
        ]
        indexes = job_indexes("cover")

    def __str__(self) -> str:
        return f"Cover of {self.project} ({self.status})"


class WebhookDelivery(models.Model):
    """A verified delivery from a service (generation.webhooks): its id is unique, so a
    delivery the service repeats (a retry, a replay within its window) is applied once."""

    service = models.CharField(max_length=20)
    # Replicate's webhook-id; fal's request id (one completion per request).
    delivery_id = models.CharField(max_length=120)
    provider_job_id = models.CharField(max_length=120)
    status = models.CharField(max_length=40, blank=True)  # what the delivery said
    ended = models.BooleanField(default=False)  # it says the service's job has ended
    outcome = models.CharField(max_length=120, blank=True)  # what the studio did with it
    received_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["service", "delivery_id"], name="one_webhook_delivery_per_id"
            ),
        ]
        indexes = [models.Index(fields=["provider_job_id"], name="webhook_job_idx")]

    def __str__(self) -> str:
        return f"{self.service} webhook {self.delivery_id} ({self.outcome})"


class ProviderGate(models.Model):
    """Limits shared by every worker on every machine: one row per provider (and model),
    and one per project that lowers them. Holds the requests-per-minute token bucket."""

    key = models.CharField(max_length=120, unique=True)  # "openai:gpt-image-1", "project:7"
    tokens = models.FloatField(default=0)
    refilled_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.key


class ProviderAccount(models.Model):
    """A provider plus its endpoint plus a fingerprint of its key: what credits, a key, an
    outage and Retry-After cool-downs belong to. Shared by every worker and every project
    that calls through it. No row means ok."""

    class State(models.TextChoices):
        OK = "ok"
        COOLING = "cooling"
        HALTED = "halted"
        PROBING = "probing"  # halted by an outage, one real call is trying it

    class Reason(models.TextChoices):
        OUT_OF_CREDITS = "out_of_credits", "Out of credits"
        AUTH = "auth", "Authentication failed"
        OUTAGE = "outage", "Service outage"
        CONFIG = "config", "Configuration"

    key = models.CharField(max_length=200, unique=True)
    provider = models.CharField(max_length=40)
    endpoint = models.CharField(max_length=300, blank=True)
    state = models.CharField(max_length=10, choices=State, default=State.OK)
    reason = models.CharField(max_length=20, choices=Reason, blank=True)
    message = models.TextField(blank=True)
    # Cooling: no call starts before this (Retry-After), for any worker.
    cooldown_until = models.DateTimeField(null=True, blank=True)
    cooldown_reason = models.CharField(max_length=300, blank=True)
    # The outage breaker: transient failures in a row across every project; any success
    # resets it.
    failures_in_row = models.PositiveIntegerField(default=0)
    # An outage heals itself: one real call is tried at next_probe_at, then at growing
    # intervals (30 s, 1, 2, 4, 8, 15 min, … capped by STUDIO_OUTAGE_PROBE_MAX).
    next_probe_at = models.DateTimeField(null=True, blank=True)
    probes = models.PositiveSmallIntegerField(default=0)
    probe_by = models.CharField(max_length=64, blank=True)  # the worker making the probe
    probe_started_at = models.DateTimeField(null=True, blank=True)
    halted_at = models.DateTimeField(null=True, blank=True)
    # When it was last set going again (a Resume, a probe that got through): the failure of
    # a call that started before then is old news and halts nothing.
    resumed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(db_default=Now())

    # No update() that moves projects' counters behind its caller's back: the account's
    # row is last in the lock order, so generation.accounts moves them once it commits.

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        """The provider and endpoint, never the key's fingerprint alone."""
        return f"{self.provider} at {self.endpoint}" if self.endpoint else self.provider


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


def _one_of(*fields: str) -> Q:
    """Return a condition: exactly one of the foreign keys is set."""
    conditions = [
        Q(**{f"{field}__isnull": field != chosen for field in fields}) for chosen in fields
    ]
    either = conditions[0]
    for condition in conditions[1:]:
        either |= condition
    return either


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
        CONFIG = "config", "Configuration"
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
    sheet = models.ForeignKey(
        SheetJob, null=True, blank=True, on_delete=models.CASCADE, related_name="attempts"
    )
    upscale = models.ForeignKey(
        Upscale, null=True, blank=True, on_delete=models.CASCADE, related_name="attempts"
    )
    cover = models.ForeignKey(
        CoverJob, null=True, blank=True, on_delete=models.CASCADE, related_name="attempts"
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
    # Sent with the call; a call that may repeat a paid one (after a lost worker or an
    # answer that broke off) sends the same key again.
    idempotency_key = models.CharField(max_length=120, blank=True)
    # The call journal: written before the request goes out, so that whatever crashes, the
    # studio knows what it may have paid for. The storage name its picture gets (written
    # there before the job completes: recovery completes the job from it without a call),
    # the price it most likely costs, and an asynchronous service's job id (recovery polls
    # that job again, and its picture confirms this row, not a new one).
    storage_name = models.CharField(max_length=300, blank=True)
    expected_price = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    provider_job_id = models.CharField(max_length=120, blank=True)
    account = models.CharField(max_length=200, blank=True)  # the provider account called
    # The service most likely charged for this call although its answer never arrived
    # whole (the worker was lost, the answer broke off): its cost is a likely price.
    charge_unconfirmed = models.BooleanField(default=False)
    # What the service charges for this call, as also written to the spend ledger (which
    # keeps it when this row goes with its page).
    cost = models.DecimalField(max_digits=10, decimal_places=4, default=0)

    class Meta:
        ordering = ["illustration", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["illustration", "number"], name="attempt_number_unique"
            ),
            models.UniqueConstraint(fields=["story", "number"], name="story_attempt_number_unique"),
            models.UniqueConstraint(fields=["clip", "number"], name="clip_attempt_number_unique"),
            models.UniqueConstraint(fields=["sheet", "number"], name="sheet_attempt_number_unique"),
            models.UniqueConstraint(
                fields=["upscale", "number"], name="upscale_attempt_number_unique"
            ),
            models.UniqueConstraint(fields=["cover", "number"], name="cover_attempt_number_unique"),
            models.CheckConstraint(
                condition=_one_of("illustration", "story", "clip", "sheet", "upscale", "cover"),
                name="attempt_belongs_to_one_job",
            ),
        ]
        indexes = [
            models.Index(fields=["outcome", "started_at"]),
            # The operations page and /metrics read the last hour or day of calls.
            models.Index(fields=["started_at"], name="attempt_started_idx"),
        ]

    def __str__(self) -> str:
        return f"Attempt {self.number} of {self.job}: {self.outcome}"

    @property
    def job(self):
        return (
            self.illustration or self.story or self.clip or self.sheet or self.upscale or self.cover
        )

    @property
    def charge(self) -> str:
        """What the journal knows of the call's charge: "paid", "unknown" (the service
        most likely charged it, but no whole answer came back), "unpaid", or "open" (in
        flight)."""
        if self.outcome == self.Outcome.IN_FLIGHT:
            return "open"
        if self.outcome == self.Outcome.SUCCESS:
            return "paid"
        return "unknown" if self.charge_unconfirmed else "unpaid"


class SpendEntry(models.Model):
    """One call the studio paid for, or most likely paid for: an append-only ledger.

    Entries outlive the pages, runs and attempts they came from, so deleting an
    illustrated page never refunds its spend; budgets and every spend figure read it.
    """

    class Basis(models.TextChoices):
        PRICE = "price", "Price list"
        USAGE = "usage", "Reported usage at token prices"
        REPORTED = "reported", "Cost reported by the service"
        LIKELY = "likely", "Likely price (unconfirmed)"

    # The attempt it records (not a foreign key: the attempt may be deleted, the entry
    # stays); unique, so a call is never entered twice.
    attempt_id = models.BigIntegerField(unique=True)
    # Plain ids, not foreign keys: a call finishing after its project was deleted is still
    # entered, and entries stay when projects and runs go.
    project_id = models.BigIntegerField(null=True, blank=True)
    run_id = models.BigIntegerField(null=True, blank=True)
    kind = models.CharField(max_length=20)
    account = models.CharField(max_length=200)  # provider, endpoint and key fingerprint
    provider = models.CharField(max_length=40)
    model = models.CharField(max_length=80, blank=True)
    day = models.DateField()
    amount = models.DecimalField(max_digits=10, decimal_places=4)
    basis = models.CharField(max_length=10, choices=Basis)
    # False for a call whose answer never arrived whole (lost worker, broken answer): the
    # service most likely charged it, but it did not say so.
    confirmed = models.BooleanField(default=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        verbose_name_plural = "spend entries"
        indexes = [
            models.Index(fields=["project_id", "day"]),
            models.Index(fields=["account", "day"]),
            models.Index(fields=["run_id"]),
        ]

    def __str__(self) -> str:
        return f"{self.amount} on {self.day} ({self.get_basis_display()})"


class Batch(models.Model):
    """A batch job at an image service (economy mode): the head of its lines' journal.

    Written, with one journal row (GenerationAttempt) per page, before anything goes out;
    then each step is written as it is done: the input file's id once uploaded, the
    service's batch id once created. A step that was cut off is found again at the service
    (the file by its name, the batch by its metadata) before it is ever done twice, so a
    killed worker never creates a second batch for the same pages. generation.batches
    works it, from the sweep; no worker waits on it.
    """

    class Step(models.TextChoices):
        NEW = "new"  # journal written, nothing sent
        UPLOADED = "uploaded"  # the input file is at the service
        SUBMITTED = "submitted"  # the batch exists at the service: polled
        COLLECTED = "collected"  # over, every line's outcome entered

    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="batches"
    )
    # A plain id, not a foreign key: a batch outlives its project (deleted while the batch
    # is out), so that what the service still bills for it is entered in the ledger.
    project_id = models.BigIntegerField(db_index=True)
    provider = models.CharField(max_length=40)
    model = models.CharField(max_length=80, blank=True)
    account = models.CharField(max_length=200, blank=True)
    endpoint = models.CharField(max_length=80, blank=True)  # "/v1/images/generations"
    step = models.CharField(max_length=10, choices=Step, default=Step.NEW)
    input_file_id = models.CharField(max_length=120, blank=True)
    batch_id = models.CharField(max_length=120, blank=True)
    output_file_id = models.CharField(max_length=120, blank=True)
    error_file_id = models.CharField(max_length=120, blank=True)
    # As the service says it: validating, in_progress, finalizing, completed, expired,
    # cancelling, cancelled, failed.
    status = models.CharField(max_length=20, blank=True)
    total = models.PositiveIntegerField(default=0)
    completed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # Stop asked for it; the next check cancels it at the service.
    cancel_requested = models.BooleanField(default=False)
    message = models.TextField(blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # The polls back off: the next is due then (by the database's clock).
    next_check_at = models.DateTimeField(null=True, blank=True)
    checks = models.PositiveIntegerField(default=0)
    # Who works a step now (a compare-and-set on these, so two sweeps never do one twice).
    claimed_by = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["step", "next_check_at"], name="batch_due_idx")]

    def __str__(self) -> str:
        return f"Batch {self.pk} ({self.batch_id or self.step}, {self.status or '-'})"

    @property
    def holder(self) -> str:
        """The claim its pages' jobs are held under while it is out."""
        return f"batch:{self.pk}"


class Heartbeat(models.Model):
    """When a periodic duty (the sweep) last ran, by the database's clock: what the
    operations page and /healthz report."""

    SWEEP = "sweep"
    # When a cluster's process last took its turn to sweep (generation.liveness): the
    # processes of every cluster take turns on this row, one sweep a beat in all.
    SWEEP_TURN = "sweep-turn"

    name = models.CharField(max_length=40, unique=True)
    at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return f"{self.name} at {self.at:%H:%M:%S}"

    @classmethod
    def beat(cls, name: str) -> None:
        """Record that the duty ran now."""
        if not cls.objects.filter(name=name).update(at=Now()):
            cls.objects.bulk_create([cls(name=name)], ignore_conflicts=True)


for _model in (Run, Illustration, StoryJob, Clip, SheetJob, Upscale, CoverJob):
    watch(_model, deletes=False)  # deleted with their project or page, which moves it
