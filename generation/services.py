"""The one place that changes runs and queues jobs: views, admin, commands and tasks call it.

Services change run state and *queued* jobs only. A job a worker has claimed belongs to
that worker until it ends or its lease expires; the worker notices a stopped, paused or
halted run before its next call and gives the job back.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q
from django.db.models.functions import Now
from django_q.brokers import get_broker
from django_q.tasks import async_task

from studio.models import Page, Project
from studio.services import create_project

from . import accounts, batch_jobs, batches, catalogue, ledger, logs, runs, thumbnails, webhooks
from .batches import EconomyRefused
from .clock import db_now
from .engine import finish_from_journal, service_job_origin
from .kinds import KINDS
from .machines import ACCOUNT, RUN
from .models import (
    ACTIVE_STATUSES,
    OPEN_RUN_STATES,
    WORKING_STATUSES,
    Clip,
    CoverJob,
    GenerationAttempt,
    Illustration,
    Job,
    ProviderAccount,
    Run,
    SheetJob,
    SpendEntry,
    StoryJob,
    Upscale,
)
from .providers import (
    account_of,
    get_upscale_provider,
    project_provider,
    text_provider_configured,
)
from .runs import enqueue_jobs, enqueue_on_commit, queued_counts, set_running, settle_run
from .selectors import (
    failed_clip_pages,
    failed_pages,
    missing_clip_pages,
    missing_pages,
    outdated_page_ids,
    project_account_key,
)
from .story import MAX_STORY_PAGES

logger = logging.getLogger(__name__)

Status = Job.Status


@dataclass(frozen=True)
class ControlResult:
    """What a control service did; every one (queue, retry, prioritize, stop, pause,
    resume) answers with this, so views, admin and commands read one shape."""

    run: Run | None = None  # the open run it worked with; None: there was none to act on
    count: int = 0  # jobs it queued, or moved to the front of the line
    resumed: bool = False  # a paused or halted run was set running again


class StoryNotPossible(Exception):
    """The story phase cannot start; the message says why, for the editor."""


# --- runs ------------------------------------------------------------------------------------


def _lock(project_id: int) -> None:
    """Serialise queuing for one project, so two requests cannot queue the same work.

    A project whose run a shared halt holds (an account, the storage, a model), or while
    any account is halted, may resume every run that halt holds and move every open
    project's counter: then it takes every open project's row at once, in id order (the
    lock order among projects), never one and later the others: two Resumes on one
    account would each hold one and wait for the other's."""
    shared = (
        Run.objects.filter(project_id=project_id, state=Run.State.HALTED)
        .exclude(halted_account="")
        .exists()
        or ProviderAccount.objects.filter(
            state__in=(ProviderAccount.State.HALTED, ProviderAccount.State.PROBING)
        ).exists()
    )
    rows = Project.objects.filter(pk=project_id)
    if shared:
        rows = Project.objects.filter(Q(pk=project_id) | Q(runs__state__in=OPEN_RUN_STATES))
        rows = Project.objects.filter(pk__in=rows.values("pk"))
    list(rows.select_for_update().order_by("pk").values_list("pk", flat=True))


def _locked_run(project: Project, states) -> Run | None:
    """Lock and return the project's run in one of these states (a project has at most one
    open run), after the project's row: the lock order of the writers that queue work."""
    runs = Run.objects.filter(project=project, state__in=states).locked()
    return runs[0] if runs else None


def _open_run_for_work(project: Project, requested_by, mode: str = "now") -> tuple[Run, bool]:
    """Return the project's open run set running (or a new run, in `mode`), and whether a
    paused, halted or stopping run was resumed. Call with the project locked."""
    run = Run.objects.select_for_update().filter(project=project, state__in=OPEN_RUN_STATES).first()
    if run is None:
        # The storage is the studio's: while a full disk halts every run, a new one joins
        # the halt instead of paying for a picture it cannot keep; Resume continues it.
        storage = (
            Run.objects.filter(state=Run.State.HALTED, halted_account=accounts.STORAGE)
            .values("halt_reason", "message", "halted_account")
            .first()
        )
        state = Run.State.HALTED if storage else Run.State.RUNNING
        run = Run.objects.create(
            project=project,
            requested_by=requested_by,
            state=state,
            mode=mode,
            account=account_of(project_provider(project)),  # until a worker says otherwise
            **(storage or {}),
        )
        logs.run_state(run, state)
        return run, False
    if run.state == Run.State.RUNNING:
        return run, False
    set_running(run)
    return run, True


def resume_account(key: str) -> int:
    """An operator's Resume of a provider account (the admin, the operations page): it
    and every run it halted continue. Return how many runs continued."""
    return runs.resume_account(key)


def _has_work(run_field: str = "pk") -> Q:
    """Return a condition on runs: they have a job of some kind still to do."""
    work = Q(pk__in=[])
    for kind in KINDS.values():
        active = kind.model.objects.filter(run=OuterRef(run_field), status__in=ACTIVE_STATUSES)
        work |= Q(Exists(active))
    return work


def probe_accounts(*, now) -> int:
    """Start the due probes of accounts an outage halted: one run the outage halted runs
    again, and the account lets exactly one call through. Return probes started.

    The run is chosen among those the account halted that still have work, in turn: the
    one served longest ago (a probe's claim serves its run), so an outage is probed again
    even when its oldest run has nothing left, and never always through the same page."""
    started = 0
    accounts.probes_lost(
        stale_before=now - timedelta(seconds=settings.STUDIO_LEASE_SECONDS), now=now
    )
    due = ACCOUNT.eligible(ProviderAccount.objects.all(), "start_probe", now=now)
    for account in due:
        halted = RUN.eligible(Run.objects.filter(_has_work()), "carry_probe", account=account.key)
        run = halted.order_by("turn", "pk").first()
        counts = queued_counts(run) if run is not None else {}
        if not any(counts.values()):
            continue  # nothing waits on the account: the next run will find it halted
        if not accounts.start_probe(account.key, now=now):
            continue
        RUN.move(
            Run.objects.filter(pk=run.pk),
            "carry_probe",
            context={"account": account.key},
            updated_at=Now(),
        )
        logs.run_state(run, Run.State.RUNNING, reason="probe")
        kind = next(name for name, count in counts.items() if count)
        enqueue_jobs(run.pk, 1, kind)
        started += 1
    return started


def _queue_pages(
    project: Project,
    page_ids: list[int],
    requested_by,
    kind: str = "illustration",
    *,
    resume: bool = True,
    mode: str = "now",
) -> ControlResult:
    """Add one job of a kind per page to the open run and hand the broker their tasks.

    A paused or halted run resumes, since the editor asked for work, and its waiting jobs
    get their tasks again; with resume=False a halted or paused run stays as it is and
    the new jobs wait in it for Resume (only Resume resumes). With mode "economy" the
    pages go to the service as one batch job instead (generation.batches).
    """
    if mode == Run.Mode.ECONOMY:
        run = _economy_run(project, requested_by, pages=len(page_ids))
        if run is None:
            return ControlResult()
        KINDS[kind].create_jobs(run, page_ids)
        queued = Illustration.objects.filter(run=run, page_id__in=page_ids)
        batch = batch_jobs.start(run, queued, provider=project_provider(project))
        return ControlResult(run=run, count=batch.total if batch is not None else 0)
    if not resume:
        waiting = Run.objects.filter(
            project=project, state__in=(Run.State.HALTED, Run.State.PAUSED)
        ).first()
        if waiting is not None:
            KINDS[kind].create_jobs(waiting, page_ids)
            return ControlResult(run=waiting, count=len(page_ids))
    if not page_ids:
        open_run = Run.objects.filter(project=project, state__in=OPEN_RUN_STATES).first()
        if open_run is None or open_run.state == Run.State.RUNNING:
            return ControlResult(run=open_run, count=0)
    run, resumed = _open_run_for_work(project, requested_by)
    KINDS[kind].create_jobs(run, page_ids)
    enqueue_on_commit(run, queued_counts(run) if resumed else {kind: len(page_ids)})
    return ControlResult(run=run, count=len(page_ids), resumed=resumed)


def _economy_run(project: Project, requested_by, *, pages: int) -> Run | None:
    """Return the running run a batch of `pages` pictures joins (a new economy run if the
    project has none open); None when there are no pages. Raise EconomyRefused, saying
    why, when the project's service takes no batches, its open run is not running or is
    drawing now, or the batch's estimate would pass the budget. Call with the project
    locked."""
    provider = project_provider(project)
    model = getattr(provider, "model", "")
    if not batches.supports_batch(provider.name, model):
        raise EconomyRefused(
            f"{provider.name} ({model or 'its model'}) takes no batch jobs: choose Now."
        )
    # The lifecycle guard holds for batches too: a shut-down model is never sent a batch.
    if refusal := catalogue.refusal(provider.name, model, db_now().date()):
        raise EconomyRefused(refusal)
    if not pages:
        return None
    run = Run.objects.select_for_update().filter(project=project, state__in=OPEN_RUN_STATES).first()
    if run is not None and run.state != Run.State.RUNNING:
        raise EconomyRefused(
            f"This project's run is {run.state}: resume or stop it before sending a batch."
        )
    if run is not None and run.mode != Run.Mode.ECONOMY and runs.run_has_active_jobs(run.pk):
        raise EconomyRefused(
            "Pictures are being drawn now in this project's run: choose Economy once it "
            "ends, or stop it first."
        )
    on_way = Illustration.objects.filter(page__project=project, status__in=ACTIVE_STATUSES).count()
    batches.check_budget(project, pages=pages, on_way=on_way, provider=provider)
    if run is None:
        run, _ = _open_run_for_work(project, requested_by, mode=Run.Mode.ECONOMY)
    elif run.mode != Run.Mode.ECONOMY:
        Run.objects.filter(pk=run.pk).update(mode=Run.Mode.ECONOMY, updated_at=Now())
        run.mode = Run.Mode.ECONOMY
    return run


@transaction.atomic
def generate_missing_clips(*, project: Project, requested_by=None) -> ControlResult:
    """Queue one clip job per illustrated page that has no clip yet (idempotent)."""
    _lock(project.pk)
    pages = list(missing_clip_pages(project).values_list("pk", flat=True))
    return _queue_pages(project, pages, requested_by, kind="clip")


@transaction.atomic
def queue_clip(*, page: Page, requested_by=None, regenerate: bool = False) -> ControlResult:
    """Queue a clip for a page with a picture and no clip job on its way; with regenerate,
    also for a page whose clip is complete (it stays until the new one is)."""
    _lock(page.project_id)
    if not page.illustrations.filter(status=Status.COMPLETE).exists():
        return ControlResult()
    clips = page.clips.all()
    if clips.filter(status__in=ACTIVE_STATUSES).exists():
        return ControlResult()
    if not regenerate and clips.filter(status=Status.COMPLETE).exists():
        return ControlResult()
    return _queue_pages(page.project, [page.pk], requested_by, kind="clip")


@transaction.atomic
def upscale_pages(*, project: Project, page_ids: list[int], requested_by=None) -> ControlResult:
    """Queue one upscale (the print export's upscale step, through the configured upscale
    service) of each given page's current picture, skipping pages without one and pictures
    with an upscale on its way. Raise LookupError when no upscale service is configured."""
    get_upscale_provider()  # no service, nothing queued
    _lock(project.pk)
    on_way = Upscale.objects.filter(page__project=project, status__in=ACTIVE_STATUSES)
    pages = list(
        Illustration.objects.filter(
            page__project=project, page__in=page_ids, status=Status.COMPLETE
        )
        .exclude(pk__in=on_way.values("source_id"))
        .values_list("page_id", flat=True)
    )
    if not pages:
        return ControlResult()
    return _queue_pages(project, pages, requested_by, kind="upscale")


@transaction.atomic
def retry_failed_clips(*, project: Project, requested_by=None) -> ControlResult:
    """Queue a fresh clip job for every illustrated page whose latest clip job failed."""
    _lock(project.pk)
    pages = list(failed_clip_pages(project).values_list("pk", flat=True))
    if not pages:
        return ControlResult()
    return _queue_pages(project, pages, requested_by, kind="clip")


@transaction.atomic
def generate_missing(
    *, project: Project, requested_by=None, limit: int | None = None, mode: str = "now"
) -> ControlResult:
    """Queue one job per page without a complete illustration or an active job (with
    limit, for the first `limit` such pages in page order: the pictures a budget leaves
    room for).

    Idempotent: pages already queued or complete are left alone, so a double click queues
    nothing more. A halted or paused run is not resumed (that is Resume's job, after the
    editor has fixed what halted it): the new jobs wait in it.
    """
    _lock(project.pk)
    pages = list(missing_pages(project).order_by("number").values_list("pk", flat=True))
    if limit is not None:
        pages = pages[:limit]
    return _queue_pages(project, pages, requested_by, resume=False, mode=mode)


@transaction.atomic
def regenerate_outdated(*, project: Project, requested_by=None, mode: str = "now") -> ControlResult:
    """Queue a new picture for every page whose picture was drawn from a prompt that has
    changed since (the page, the style guide, …) and has no job on its way. Each old
    picture stays until its new one is complete. Approved pages are left alone (the
    editor regenerates those one by one). A paused or halted run is left as it is: the new
    jobs wait in it for Resume."""
    _lock(project.pk)
    outdated = set(outdated_page_ids(project, approved=False))
    busy = set(
        Illustration.objects.filter(page__in=outdated, status__in=ACTIVE_STATUSES).values_list(
            "page_id", flat=True
        )
    )
    pages = sorted(outdated - busy)
    return _queue_pages(project, pages, requested_by, resume=False, mode=mode)


@transaction.atomic
def generate_missing_in_section(
    *, project: Project, section: str, requested_by=None
) -> ControlResult:
    """Queue one job per page of the named section ("" for the pages before any section)
    without a complete illustration or an active job: generate_missing, for one section."""
    _lock(project.pk)
    pages = list(missing_pages(project).filter(section=section).values_list("pk", flat=True))
    return _queue_pages(project, pages, requested_by)


@transaction.atomic
def retry_failed(*, project: Project, requested_by=None, mode: str = "now") -> ControlResult:
    """Queue a fresh job, with fresh attempts, for every page whose latest job failed."""
    _lock(project.pk)
    pages = list(failed_pages(project).values_list("pk", flat=True))
    if not pages:
        return ControlResult()
    return _queue_pages(project, pages, requested_by, mode=mode)


@transaction.atomic
def queue_page(*, page: Page, requested_by=None, regenerate: bool = False) -> ControlResult:
    """Queue one job for a page that has none active: a missing page (retry), or with
    regenerate, also a complete one, whose picture stays until the new one is complete."""
    _lock(page.project_id)
    jobs = page.illustrations.all()
    if jobs.filter(status__in=ACTIVE_STATUSES).exists():
        return ControlResult()
    if not regenerate and jobs.filter(status=Status.COMPLETE).exists():
        return ControlResult()
    return _queue_pages(page.project, [page.pk], requested_by)


@transaction.atomic
def prioritize(*, page: Page, requested_by=None) -> ControlResult:
    """Move the page's job to the front of its run, queuing one if the page is missing.
    The result counts 1 when the page is now first in line."""
    job = page.illustrations.select_related("run").filter(status=Status.QUEUED).first()
    if job is None:
        if not queue_page(page=page, requested_by=requested_by).count:
            return ControlResult()
        job = page.illustrations.select_related("run").get(status=Status.QUEUED)
    top = (
        Illustration.objects.filter(run_id=job.run_id, status=Status.QUEUED)
        .order_by("-priority")
        .values_list("priority", flat=True)
        .first()
    ) or 0
    updated = Illustration.objects.filter(pk=job.pk, status=Status.QUEUED).update(
        priority=top + 1, updated_at=Now()
    )
    return ControlResult(run=job.run, count=updated)


@transaction.atomic
def draw_cover(*, project, requested_by=None) -> ControlResult:
    """Queue the front cover's own picture (the cover prompt, or one from the title and the
    book's characters) on the project's open run. Earlier covers stay; one already on its
    way is not queued twice (count 0). A paused or halted run resumes, since the editor
    asked."""
    _lock(project.pk)
    if CoverJob.objects.filter(project=project, status__in=ACTIVE_STATUSES).exists():
        return ControlResult()
    run, resumed = _open_run_for_work(project, requested_by)
    CoverJob.objects.create(project=project, run=run)
    enqueue_on_commit(run, queued_counts(run) if resumed else {"cover": 1})
    return ControlResult(run=run, count=1, resumed=resumed)


@transaction.atomic
def draw_sheet(*, character, requested_by=None) -> ControlResult:
    """Queue a character sheet for the character (front, three-quarter and back view) on
    the project's open run. Its earlier versions stay; a sheet already on its way is not
    queued twice (count 0). A paused or halted run resumes, since the editor asked."""
    _lock(character.project_id)
    if SheetJob.objects.filter(character=character, status__in=ACTIVE_STATUSES).exists():
        return ControlResult()
    run, resumed = _open_run_for_work(character.project, requested_by)
    SheetJob.objects.create(character=character, run=run)
    enqueue_on_commit(run, queued_counts(run) if resumed else {"sheet": 1})
    return ControlResult(run=run, count=1, resumed=resumed)


@transaction.atomic
def write_story(
    *, project: Project, premise: str, pages: int, audience: str = "", requested_by=None
) -> StoryJob:
    """Queue the story phase: a text service writes `pages` pages from the premise.

    Return the project's story job (the one already on its way, if any). Raise
    StoryNotPossible, with a message for the editor, when it cannot start.
    """
    _lock(project.pk)
    if project.pages.exists():
        raise StoryNotPossible("The story phase is skipped: this project already has pages.")
    if not text_provider_configured():
        raise StoryNotPossible(
            "No text service is configured (set STUDIO_TEXT_PROVIDER=openai), so the studio "
            "cannot write a story from a premise. Start from a manuscript instead."
        )
    if not premise.strip():
        raise StoryNotPossible("Write a premise: what happens, to whom.")
    if not 1 <= pages <= MAX_STORY_PAGES:
        raise StoryNotPossible(f"A story can have 1 to {MAX_STORY_PAGES} pages.")
    active = project.story_jobs.filter(status__in=ACTIVE_STATUSES).first()
    if active is not None:
        return active
    run, resumed = _open_run_for_work(project, requested_by)
    job = StoryJob.objects.create(
        project=project,
        run=run,
        premise=premise.strip(),
        audience=audience.strip(),
        pages_wanted=pages,
    )
    enqueue_on_commit(run, queued_counts(run) if resumed else {"story": 1})
    return job


@transaction.atomic
def create_story_project(
    *, owner, title: str, premise: str, pages: int, style_guide: str = "", audience: str = ""
) -> Project:
    """Create a project whose pages a text service writes from the premise, with its story
    phase queued; return it. Raise StoryNotPossible, leaving no project behind, when the
    story cannot start."""
    project = create_project(owner=owner, title=title, style_guide=style_guide)
    write_story(
        project=project, premise=premise, audience=audience, pages=pages, requested_by=owner
    )
    return project


@transaction.atomic
def stop(*, project: Project) -> ControlResult:
    """Stop the open run: calls in flight finish, queued jobs are canceled, work is kept.

    The request settles what it can itself, so "Stopping" never waits for a worker that is
    not there: jobs whose worker's lease ran out (the worker is dead) are taken back now,
    canceled, their calls recorded as lost, as the sweep would."""
    run = _locked_run(project, OPEN_RUN_STATES)
    if run is None:
        return ControlResult()
    rows = Run.objects.filter(pk=run.pk)
    RUN.move(rows, "stop", updated_at=Now())
    batch_jobs.cancel_for_run(run.pk)  # the sweep's next look cancels them at the service
    reclaim_expired(run_id=run.pk)
    working = False
    at_service = []
    for kind in KINDS.values():
        jobs = kind.model.objects.filter(run=run)
        keep_stored_pictures(kind, jobs)
        jobs.cancel_queued()
        # Pictures being made at the service for a webhook: canceled there too, as a
        # worker polling one cancels it (generation.kinds.follow_service_job).
        at_service += webhooks.cancel_awaiting(kind, jobs)
        working |= jobs.filter(status__in=WORKING_STATUSES).exists()
    if at_service:
        transaction.on_commit(lambda: async_task("generation.tasks.cancel_at_service", at_service))
    run.state = Run.State.STOPPING
    if not working and RUN.move(rows, "stopped", finished_at=Now(), updated_at=Now()):
        run.state = Run.State.STOPPED
    logs.run_state(run, run.state)
    return ControlResult(run=run)


@transaction.atomic
def pause(*, project: Project) -> ControlResult:
    """Pause the running run: calls in flight finish, the queue is kept for Resume. A run
    with a batch out is not paused: the service works the batch as one job (Stop cancels
    it, keeping what it finished)."""
    run = _locked_run(project, [Run.State.RUNNING])
    if run is None or run.mode == Run.Mode.ECONOMY:
        return ControlResult()
    RUN.move(Run.objects.filter(pk=run.pk), "pause", updated_at=Now())
    run.state = Run.State.PAUSED
    logs.run_state(run, Run.State.PAUSED)
    return ControlResult(run=run)


@transaction.atomic
def resume(*, project: Project) -> ControlResult:
    """Resume a paused or halted run: the same missing pages continue where they were. A
    run whose provider account halted it resumes the account, and with it every run the
    account halted; so does Resume on a project whose run found the account halted."""
    _lock(project.pk)
    run = _locked_run(project, [Run.State.PAUSED, Run.State.HALTED])
    if run is None:
        running = Run.objects.filter(project=project, state=Run.State.RUNNING).first()
        key = project_account_key(project, running)
        halted = ProviderAccount.objects.filter(
            key=key, state__in=(ProviderAccount.State.HALTED, ProviderAccount.State.PROBING)
        )
        if running is None or not halted.exists():
            return ControlResult()
        resume_account(key)
        return ControlResult(run=running, resumed=True)
    set_running(run)
    enqueue_on_commit(run, queued_counts(run))
    return ControlResult(run=run, resumed=True)


@transaction.atomic
def switch_service(*, project: Project, service: str) -> ControlResult:
    """Draw the project's remaining pages with another image service: the project's choice
    changes, and a run its old service's account halted continues on the new one (the old
    account stays halted for the projects still on it; pictures already drawn stay)."""
    _lock(project.pk)
    # A model chosen for the old service is no model of the new one.
    Project.objects.filter(pk=project.pk).update(image_service=service, image_model="")
    Project.objects.mark_changed(project.pk)
    project.image_service = service
    project.image_model = ""
    run = Run.objects.select_for_update().filter(project=project, state=Run.State.HALTED).first()
    if run is None or run.halted_account in ("", accounts.STORAGE):
        return ControlResult()  # another service does not free the disk
    run.halted_account = ""  # this run leaves the old account; the account stays halted
    set_running(run)
    enqueue_on_commit(run, queued_counts(run))
    return ControlResult(run=run, resumed=True)


@transaction.atomic
def switch_model(*, project: Project, model: str) -> ControlResult:
    """Draw the project's pictures with another model of its image service (a shut-down
    model's replacement, in one click): the project's choice changes, and a run halted for
    its model's configuration continues with the new one."""
    _lock(project.pk)
    Project.objects.filter(pk=project.pk).update(image_model=model)
    Project.objects.mark_changed(project.pk)
    project.image_model = model
    run = Run.objects.select_for_update().filter(project=project, state=Run.State.HALTED).first()
    if run is None or run.halt_reason != Run.HaltReason.CONFIG:
        return ControlResult()
    run.halted_account = ""  # this run leaves a studio-wide model halt; the halt stays for others
    set_running(run)
    enqueue_on_commit(run, queued_counts(run))
    return ControlResult(run=run, resumed=True)


# --- repair --------------------------------------------------------------------------------


def top_up_broker(*, now) -> int:
    """Make the broker hold at least one waiting task per due queued job of a running run.
    Return how many tasks were added.

    Tasks are interchangeable (each claims the due job of its kind whose turn it is, in
    any running run), so counting is enough. A task can vanish with a killed cluster that
    had fetched it, or sit locked in the ORM broker until its retry time; the broker
    cannot tell those from tasks a live cluster has fetched, so this may over-deliver,
    which is harmless: a task that finds nothing to claim calls nothing.
    """
    due: list[tuple[str, int, int]] = []
    for name, kind in KINDS.items():
        # Deferred jobs (a long Retry-After) whose time has come become claimable again.
        kind.model.objects.filter(status=Status.QUEUED, next_attempt_at__lte=now).update(
            next_attempt_at=None
        )
        counts = (
            kind.model.objects.filter(
                status=Status.QUEUED, run__state=Run.State.RUNNING, next_attempt_at__isnull=True
            )
            .values("run")
            .annotate(due=Count("pk"))
            .values_list("run", "due")
            .order_by("run")
        )
        due += [(name, run_id, count) for run_id, count in counts]
    deficit = sum(count for _, _, count in due) - get_broker().queue_size()
    added = 0
    for name, run_id, count in due:
        count = min(count, deficit - added)
        if count <= 0:
            break
        if not enqueue_jobs(run_id, count, name):
            break  # the broker cannot be reached: the next sweep tries again
        added += count
    return added


def reclaim_expired(
    *, now=None, run_id: int | None = None, touched: set[int] | None = None
) -> dict[str, int]:
    """Take back jobs whose worker stopped renewing its lease (killed, or cut off from the
    database). Return counts; add the ids of the runs whose jobs it moved to `touched`.

    Every write is a compare-and-set on the lease (it ran out, by `now`): a worker heard
    again since the job was read keeps its job, and its call. A call the worker had in
    flight is recorded as lost: it counts as an attempt and, since the service most likely
    charged it, is entered in the ledger at its likely price, unconfirmed. A job whose
    worker was lost on its last allowed attempt fails, so no path reclaims forever; the
    others go back to the queue (canceled if their run stopped).
    """
    counts = {"requeued": 0, "canceled": 0, "failed": 0, "completed": 0}
    touched = set() if touched is None else touched
    max_attempts = settings.STUDIO_MAX_ATTEMPTS
    for kind in KINDS.values():
        expired = kind.model.objects.expired(now=now)
        if run_id is not None:  # one run's (Stop)
            expired = expired.filter(run_id=run_id)
        for job in expired.select_related(*kind.select_related):
            if finish_from_journal(kind, job, lost_by=now):
                counts["completed"] += 1
                touched.add(job.run_id)
                continue
            rows = kind.model.objects.filter(pk=job.pk).expired(now=now)
            lost = list(
                GenerationAttempt.objects.filter(
                    **{kind.attempt_field: job}, outcome=GenerationAttempt.Outcome.IN_FLIGHT
                )
            )
            # A lost call whose picture reached storage is no failure: the job goes back
            # to the queue, and its next worker completes it from there without a call.
            lost_calls = [attempt for attempt in lost if not _stored(kind, job, attempt)]
            extra = {"attempts_made": F("attempts_made") + 1} if lost_calls else {}
            if lost_calls and job.attempts_made + 1 >= max_attempts:
                times = (
                    1
                    + GenerationAttempt.objects.filter(
                        **{kind.attempt_field: job}, outcome=GenerationAttempt.Outcome.LOST
                    ).count()
                )
                changed = rows.fail(
                    now=now,
                    reason="exhausted",
                    message=f"The worker was lost {_times(times)} during the call.",
                    **extra,
                )
                counts["failed"] += changed
            else:
                requeued, canceled = rows.release(now=now, **extra)
                counts["requeued"] += requeued
                counts["canceled"] += canceled
                changed = requeued + canceled
            if changed:
                touched.add(job.run_id)
                for attempt in lost:
                    _record_lost(kind, job, attempt)
    return counts


def keep_stored_pictures(kind, jobs) -> int:
    """Complete the queued jobs among `jobs` whose last call's paid picture is in storage
    (their worker lost its claim after storing it), before anything cancels them: Stop
    keeps work. Return how many it completed."""
    paid = GenerationAttempt.objects.filter(
        **{kind.attempt_field: OuterRef("pk")},
        outcome__in=(GenerationAttempt.Outcome.SUCCESS, GenerationAttempt.Outcome.LOST),
    ).exclude(storage_name="")
    waiting = jobs.filter(Exists(paid), status=Status.QUEUED).select_related(*kind.select_related)
    return sum(finish_from_journal(kind, job) for job in waiting)


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


def _stored(kind, job, attempt: GenerationAttempt) -> bool:
    return kind.stored_result(job, attempt.storage_name) is not None


def _record_lost(kind, job, attempt: GenerationAttempt) -> None:
    """Close a lost call's journal row as most likely charged, and enter it in the ledger
    once: a call that was polling a service job an earlier call created is entered under
    that call's row (the service charges the job once, however many workers followed it)."""
    price = attempt.expected_price
    if price is None:
        price = kind.likely_price(job)
    origin = attempt
    if job.provider_job_id and attempt.provider_job_id != job.provider_job_id:
        origin = service_job_origin(kind, job) or attempt
    GenerationAttempt.objects.filter(pk=attempt.pk).update(
        outcome=GenerationAttempt.Outcome.LOST,
        finished_at=Now(),
        message="The worker stopped responding during this call; the service most likely "
        "charged it.",
        charge_unconfirmed=True,
        cost=price or 0,
    )
    ledger.enter(
        attempt_id=origin.pk,
        amount=price,
        basis=SpendEntry.Basis.LIKELY,
        confirmed=False,
        project_id=kind.project(job).pk,
        run_id=job.run_id,
        kind=kind.name,
        account=origin.account,
        provider=job.provider,
        model=job.model,
    )


def sweep(*, now=None, every_run: bool = True) -> dict[str, int]:
    """Repair what dead workers and lost broker tasks left behind. Return counts.

    1. Jobs whose lease expired go back to queued (canceled if their run stopped, failed
       if their worker was lost on every allowed attempt); the call their worker had in
       flight is recorded as lost.
    2. The broker gets a task for every due queued job it holds no waiting task for.
    3. Runs with nothing left are closed: every open run, or (every_run=False, the sweep
       the live clusters run every beat) those whose jobs step 1 moved.
    """
    now = now or db_now()
    touched: set[int] = set()
    counts = reclaim_expired(now=now, touched=touched)
    probes = probe_accounts(now=now)
    # Jobs whose webhook is overdue are queued again, for a worker to poll them (it logs
    # how many).
    webhooks.wake_overdue(now=now)
    batch_jobs.advance_due(now=now)  # economy mode: short looks at the batches that are due
    reenqueued = top_up_broker(now=now)
    open_runs = Run.objects.filter(state__in=(Run.State.RUNNING, Run.State.STOPPING))
    if not every_run:
        open_runs = open_runs.filter(pk__in=touched)
    for run_id in open_runs.values_list("pk", flat=True):
        settle_run(run_id)
    if any(counts.values()) or reenqueued:
        logger.info(
            "Sweep: %s requeued, %s canceled, %s failed, %s completed from storage, %s re-enqueued",
            counts["requeued"],
            counts["canceled"],
            counts["failed"],
            counts["completed"],
            reenqueued,
        )
    return {**counts, "reenqueued": reenqueued, "probes": probes}


# --- versions, variants, approval ------------------------------------------------------
# Every complete picture of a page is kept: the current one (status complete, at most one
# per page: a database constraint) and its versions (status replaced). These services move
# the "current" mark between them with conditional UPDATEs and never call a service.

MAX_VARIANTS = 4


class VersionRefused(Exception):
    """A versions, variants or approval action cannot be done; the message says why, for
    the editor."""


def _page_jobs(page_id: int):
    return Illustration.objects.filter(page_id=page_id)


@transaction.atomic
def use_version(*, illustration: Illustration) -> Illustration:
    """Make a kept version the page's current picture, without any call; the current one
    becomes a version. The page's approval goes (its picture changed) and so does an open
    choice among variants (this was the choice). Return the version, now current.

    Raise VersionRefused when the version is no longer kept, or while a new picture of the
    page (not a variant) is on its way: its completion will replace the current picture.
    """
    page = illustration.page
    _lock(page.project_id)
    jobs = _page_jobs(page.pk)
    if jobs.filter(status__in=ACTIVE_STATUSES, variant=0).exists():
        raise VersionRefused(
            f"A new picture of page {page.number} is on its way; choose a version once it is done."
        )
    chosen = jobs.filter(pk=illustration.pk).exclude(image="")
    if chosen.filter(status=Status.COMPLETE).exists():
        jobs.filter(candidate=True).update(candidate=False, updated_at=Now())
        return illustration  # it is the current picture already
    if not chosen.filter(status=Status.REPLACED).exists():
        raise VersionRefused("That version of the picture is no longer kept.")
    # Two statements in one transaction, in this order: the page never has two current
    # pictures, which the database would refuse.
    jobs.filter(status=Status.COMPLETE).update(
        status=Status.REPLACED, approved_at=None, updated_at=Now()
    )
    chosen.filter(status=Status.REPLACED).update(
        status=Status.COMPLETE, approved_at=None, updated_at=Now()
    )
    jobs.filter(candidate=True).update(candidate=False, updated_at=Now())
    _clip_follows_picture(page.pk, illustration.pk)
    illustration.refresh_from_db()
    return illustration


def _clip_follows_picture(page_id: int, picture_id: int) -> None:
    """A card plays the page's clip instead of its picture, so the clip follows the picture
    chosen: a clip of another picture steps aside (kept, as versions are), and the latest
    clip made from the chosen one, if any, plays again. A clip on its way is left to
    finish: its completion replaces the current clip as always."""
    clips = Clip.objects.filter(page_id=page_id)
    if clips.filter(status__in=ACTIVE_STATUSES).exists():
        return
    clips.filter(status=Status.COMPLETE).exclude(source_id=picture_id).update(
        status=Status.REPLACED, updated_at=Now()
    )
    if clips.filter(status=Status.COMPLETE).exists():
        return
    earlier = (
        clips.filter(status=Status.REPLACED, source_id=picture_id)
        .exclude(video="")
        .order_by("-pk")
        .values("pk")[:1]
    )
    Clip.objects.filter(pk__in=earlier, status=Status.REPLACED).update(
        status=Status.COMPLETE, updated_at=Now()
    )


@transaction.atomic
def delete_version(*, illustration: Illustration) -> None:
    """Delete a version that is not the current picture: its picture and thumbnail files go
    once this commits; its row stays, discarded, so the calls it cost stay in the history.

    Raise VersionRefused for the current picture or a version already deleted."""
    from studio import files  # studio.files reads generation's models

    page = illustration.page
    _lock(page.project_id)
    rows = _page_jobs(page.pk).filter(pk=illustration.pk, status=Status.REPLACED)
    name = rows.exclude(image="").values_list("image", flat=True).first()
    if name is None:
        raise VersionRefused("Only a kept version that is not the current picture can be deleted.")
    rows.update(status=Status.DISCARDED, image="", candidate=False, updated_at=Now())
    files.delete_after_commit([name, thumbnails.thumbnail_name(name)])


@transaction.atomic
def queue_variants(
    *,
    page: Page,
    count: int,
    requested_by=None,
    confirm_approved: bool = False,
    mode: str = "now",
) -> ControlResult:
    """Queue `count` (1..4) variant jobs for the page, each its own job on the engine (its
    own claim, lease, attempts and ledger entries). A variant never displaces the current
    picture: it completes as a version beside it, for the editor to pick (only a page with
    no picture takes the first one to finish). Earlier candidates not picked stay as
    versions.

    Raise VersionRefused for a count out of range, while the page has a job on its way,
    or for an approved page unless confirm_approved.
    """
    if not 1 <= count <= MAX_VARIANTS:
        raise VersionRefused(f"Try 1 to {MAX_VARIANTS} variants.")
    _lock(page.project_id)
    jobs = _page_jobs(page.pk)
    if jobs.filter(status__in=ACTIVE_STATUSES).exists():
        raise VersionRefused(
            f"Page {page.number} already has a picture on its way; try variants once it is done."
        )
    if (
        not confirm_approved
        and jobs.filter(status=Status.COMPLETE, approved_at__isnull=False).exists()
    ):
        raise VersionRefused(
            f"Page {page.number} is approved: confirm that you want to try variants of it."
        )
    if mode == Run.Mode.ECONOMY:
        run = _economy_run(page.project, requested_by, pages=count)
        jobs.filter(candidate=True).update(candidate=False, updated_at=Now())
        Illustration.objects.bulk_create(
            Illustration(page=page, run=run, variant=slot, candidate=True)
            for slot in range(1, count + 1)
        )
        provider = project_provider(page.project)
        batch = batch_jobs.start(run, jobs.filter(run=run, candidate=True), provider=provider)
        return ControlResult(run=run, count=batch.total if batch is not None else 0)
    jobs.filter(candidate=True).update(candidate=False, updated_at=Now())
    run, resumed = _open_run_for_work(page.project, requested_by)
    Illustration.objects.bulk_create(
        Illustration(page=page, run=run, variant=slot, candidate=True)
        for slot in range(1, count + 1)
    )
    enqueue_on_commit(run, queued_counts(run) if resumed else {"illustration": count})
    return ControlResult(run=run, count=count, resumed=resumed)


@transaction.atomic
def keep_current_picture(*, page: Page) -> int:
    """Close the page's choice among variants without changing its picture: the candidates
    stay as versions. Return how many candidates it closed."""
    return _page_jobs(page.pk).filter(candidate=True).update(candidate=False, updated_at=Now())


def approve_page(*, page: Page) -> int:
    """Approve the page's current picture. Return 1 if it was approved now, 0 if the page
    has no picture or was approved already."""
    return (
        _page_jobs(page.pk)
        .filter(status=Status.COMPLETE, approved_at__isnull=True)
        .update(approved_at=Now(), updated_at=Now())
    )


def unapprove_page(*, page: Page) -> int:
    """Take back the page's approval. Return 1 if it was approved."""
    return (
        _page_jobs(page.pk)
        .filter(status=Status.COMPLETE, approved_at__isnull=False)
        .update(approved_at=None, updated_at=Now())
    )


def approve_all(*, project: Project) -> int:
    """Approve the current picture of every page that has one. Return how many pages were
    approved now."""
    return Illustration.objects.filter(
        page__project=project, status=Status.COMPLETE, approved_at__isnull=True
    ).update(approved_at=Now(), updated_at=Now())
