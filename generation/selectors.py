"""Read-side queries: where every page of a project stands, in a constant number of queries."""

import functools
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import connection, connections
from django.db.models import (
    Count,
    DecimalField,
    Exists,
    IntegerField,
    Max,
    Min,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    prefetch_related_objects,
)
from django.db.models.functions import Coalesce

from studio.models import Page, Project

from . import accounts, catalogue, liveness, references, workers
from .batches import RunBatches, batch_price, of_run, supports_batch
from .broker import UNREACHABLE
from .clock import db_now
from .models import (
    ACTIVE_STATUSES,
    WORKING_STATUSES,
    Clip,
    CoverJob,
    Illustration,
    Run,
    SheetJob,
    SpendEntry,
    StoryJob,
    Upscale,
)
from .plain import without_service_text
from .pricing import amount, money, price_per_image, price_per_upscale
from .prompts import compose, compose_prompt
from .providers import (
    IMAGE_SERVICES,
    account_of,
    configured_image_services,
    get_upscale_provider,
    image_service_of,
    project_provider,
    text_provider_configured,
    upscale_configured,
)

Status = Illustration.Status


def upscale_offer(count: int) -> dict | None:
    """Return what the print export offers for upscaling `count` pictures through the
    configured upscale service (its label, model, scale, count and estimate), or None when
    no service is configured (the local resample is offered instead)."""
    if not upscale_configured():
        return None
    provider = get_upscale_provider()
    price = price_per_upscale(provider.name, provider.model)
    return {
        "label": provider.label,
        "model": catalogue.canonical(provider.name, provider.model),
        "scale": provider.scale,
        "count": count,
        "estimate": money(price * count) if price is not None else "price unknown",
    }


@dataclass(frozen=True)
class Progress:
    pages: int = 0
    illustrated: int = 0
    queued: int = 0  # missing pages waiting for a worker
    generating: int = 0  # pages a worker is on (generating or waiting to retry)
    failed: int = 0  # failed pages "Retry failed" would queue again
    rejected: int = 0  # pages whose prompt the service refused: edit the prompt first
    approved: int = 0  # pages whose current picture the editor approved
    on_way: int = 0  # missing pages with a job on its way (queued, generating, retrying)
    redrawing: int = 0  # pages with a picture and a new one on its way (regenerated)

    @property
    def missing(self) -> int:
        return self.pages - self.illustrated

    @property
    def to_generate(self) -> int:
        """Missing pages "Generate missing" queues: not on their way, not failed, not
        rejected (each of those has its own control)."""
        return self.missing - self.on_way - self.failed - self.rejected

    @property
    def not_approved(self) -> int:
        """Pages not approved: with a picture still to approve, or with none yet."""
        return self.pages - self.approved

    @property
    def to_approve(self) -> int:
        """Pages with a picture the editor has not approved: what "Approve all" approves."""
        return self.illustrated - self.approved

    @property
    def active(self) -> int:
        """Pages with a job on its way: missing ones, and ones being drawn again."""
        return self.on_way + self.redrawing

    @property
    def busy(self) -> bool:
        return bool(self.active)

    @property
    def percent(self) -> int:
        return int(100 * self.illustrated / self.pages) if self.pages else 0

    @property
    def complete(self) -> bool:
        """A project is complete only when every page has a complete illustration."""
        return self.pages > 0 and self.illustrated == self.pages


def with_page_state(pages):
    """Annotate pages with where their pictures stand: has_complete, is_approved (its
    current picture is approved), active_status (the status of the job on its way, if any)
    and latest_status (of the latest job)."""
    jobs = Illustration.objects.filter(page=OuterRef("pk"))
    return pages.annotate(
        has_complete=Exists(jobs.filter(status=Status.COMPLETE)),
        is_approved=Exists(jobs.filter(status=Status.COMPLETE, approved_at__isnull=False)),
        active_status=Subquery(jobs.filter(status__in=ACTIVE_STATUSES).values("status")[:1]),
        latest_status=Subquery(jobs.order_by("-pk").values("status")[:1]),
        latest_reason=Subquery(jobs.order_by("-pk").values("failure_reason")[:1]),
    )


# What each state of a page means, over pages annotated by with_page_state: the one
# definition that the counts, the badges and the services' queues all read.
MISSING = Q(has_complete=False)
# Missing and no job on its way: what "Generate missing" queues.
TO_QUEUE = MISSING & Q(active_status__isnull=True)
# Missing, not on its way, and its latest job was refused by the service (a rejected
# prompt): re-sending it is pointless, so "Retry failed" leaves it for an edited prompt.
REJECTED = TO_QUEUE & Q(latest_status=Status.FAILED, latest_reason="rejected")
# Missing, not on its way, and its latest job failed otherwise: what "Retry failed" queues.
FAILED = TO_QUEUE & Q(latest_status=Status.FAILED) & ~Q(latest_reason="rejected")
# Missing, not on its way, and not failed: never asked for, or stopped before it was drawn.
# What "Generate missing" queues; failed pages are "Retry failed"'s and rejected ones wait
# for an edited prompt, so no page is offered by two controls.
TO_GENERATE = TO_QUEUE & (Q(latest_status__isnull=True) | ~Q(latest_status=Status.FAILED))
# The editor approved its current picture; bulk actions leave such pages alone.
APPROVED = Q(is_approved=True)
# Which pages each Progress count counts.
PAGE_COUNTS = {
    "illustrated": Q(has_complete=True),
    "queued": MISSING & Q(active_status=Status.QUEUED),
    "generating": Q(active_status__in=(Status.GENERATING, Status.RETRYING, Status.AWAITING)),
    "failed": FAILED,
    "rejected": REJECTED,
    "approved": APPROVED,
    "on_way": MISSING & Q(active_status__isnull=False),
    "redrawing": Q(has_complete=True, active_status__isnull=False),
}


def missing_pages(project: Project):
    """Return the project's pages that "Generate missing" queues: no complete illustration,
    no job on its way, and no failed one (failed pages are retried by "Retry failed";
    a rejected prompt is sent again only once the editor has edited it)."""
    return with_page_state(project.pages.all()).filter(TO_GENERATE)


def failed_pages(project: Project):
    """Return the project's pages that are missing, not on their way, and whose latest job
    failed for a reason other than a rejected prompt."""
    return with_page_state(project.pages.all()).filter(FAILED)


def not_approved_pages(project: Project):
    """Return the project's pages whose current picture is not approved (or that have
    none): the pages bulk actions (Regenerate changed, variants) may touch."""
    return with_page_state(project.pages.all()).exclude(APPROVED)


def approved_pages(project: Project):
    """Return the project's pages whose current picture the editor approved."""
    return with_page_state(project.pages.all()).filter(APPROVED)


def page_versions(page: Page) -> list[Illustration]:
    """Return every kept picture of the page, newest first: the current one and the
    versions it took over from (variants not picked included)."""
    return list(
        page.illustrations.filter(status__in=(Status.COMPLETE, Status.REPLACED))
        .exclude(image="")
        .order_by("-finished_at", "-pk")
    )


def page_candidates(page: Page) -> list[Illustration]:
    """Return the page's variants waiting for the editor's pick (done or still on their
    way), in slot order."""
    return list(page.illustrations.filter(candidate=True).order_by("variant", "pk"))


# The annotations of with_page_state: together, where a page stands.
PAGE_STATE = ("has_complete", "is_approved", "active_status", "latest_status", "latest_reason")


def project_progress(project: Project) -> Progress:
    """Return the project's page counts, derived from job rows in one query."""
    statement = _progress_statement(connection.alias)
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, statement.parameters(project.pk))
        row = cursor.fetchone()
    # PostgreSQL sums counts as numerics.
    return Progress(
        **{name: int(value) for name, value in zip(statement.columns, row, strict=True)}
    )


@dataclass(frozen=True)
class Statement:
    """A query built once with the ORM, run with another project's id."""

    sql: str
    params: tuple
    project_places: tuple[int, ...]  # where the project's id goes among the params
    columns: tuple[str, ...]

    def parameters(self, project_id: int) -> list:
        params = list(self.params)
        for place in self.project_places:
            params[place] = project_id
        return params


def prepare_queries() -> None:
    """Build the queries kept per database now, not at the first page count (tests that
    count a request's queries build them before any test)."""
    _progress_statement(connection.alias)


_NO_PROJECT = -4242  # no project has this id: it marks the project's place in the params


@functools.cache
def _progress_statement(alias: str) -> Statement:
    """Return project_progress's query, built once per database.

    Pages are first grouped by their state, then the few groups counted: counting the
    pages directly let PostgreSQL repeat each page's subqueries once per count that read
    them (a 2,000-page book's counts took 51 ms, now 16). Building the query with the ORM
    took twice as long as running it (a 500-page book: 7-11 ms against 3), on every poll
    that asks for a header: it is built once, on a project that does not exist, and its
    SQL kept."""
    columns = ("pages", *PAGE_COUNTS)
    aggregates = {
        "pages": Sum("n", default=0),
        **{name: Sum("n", filter=q, default=0) for name, q in PAGE_COUNTS.items()},
    }
    grouped = (
        with_page_state(Page.objects.using(alias).filter(project_id=_NO_PROJECT))
        .values(*PAGE_STATE)
        .annotate(n=Count("pk"))
        .order_by()
    )
    executed = []

    def keep(execute, sql, params, many, context):
        executed.append((sql, tuple(params)))
        return execute(sql, params, many, context)

    with connections[alias].execute_wrapper(keep):
        counts = grouped.aggregate(**aggregates)
    assert list(counts) == list(columns), counts  # the row's columns, in this order
    (sql, params), *_ = executed
    places = tuple(place for place, value in enumerate(params) if value == _NO_PROJECT)
    return Statement(sql, params, places, columns)


def section_progress(project: Project) -> dict[str, Progress]:
    """Return the Progress of each section of the project, by section name ("" for pages
    in no section), in one query."""
    rows = (
        with_page_state(Page.objects.filter(project=project))
        .values("section")
        .annotate(
            pages=Count("pk"), **{name: Count("pk", filter=q) for name, q in PAGE_COUNTS.items()}
        )
        .order_by()
    )
    return {row.pop("section"): Progress(**row) for row in rows}


def _count(pages) -> Coalesce:
    counted = pages.order_by().values("project").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def book_runs():
    """Return the runs that are the book's to its editor: every run but one that only drew
    character sheets, covers or upscaled pictures for print (a sheet or a cover is drawn on
    the project's open run, or a run of its own, but drawing one is not illustrating the
    book: a run of sheets alone must never read "Run finished" while every page is
    missing)."""
    of_run = {"run": OuterRef("pk")}
    return Run.objects.filter(
        ~(
            Exists(SheetJob.objects.filter(**of_run))
            | Exists(CoverJob.objects.filter(**of_run))
            | Exists(Upscale.objects.filter(**of_run))
        )
        | Exists(Illustration.objects.filter(**of_run))
        | Exists(Clip.objects.filter(**of_run))
        | Exists(StoryJob.objects.filter(**of_run))
    )


def with_progress(projects):
    """Annotate each project with its Progress counts (page_count, illustrated_count, …),
    its latest run's state and what it has spent: lists of projects in one query."""
    pages = with_page_state(Page.objects.filter(project=OuterRef("pk")))
    runs = book_runs().filter(project=OuterRef("pk")).order_by("-pk")
    return projects.annotate(
        page_count=_count(pages),
        **{f"{name}_count": _count(pages.filter(q)) for name, q in PAGE_COUNTS.items()},
        run_state=Subquery(runs.values("state")[:1]),
        spent=spending(OuterRef("pk")),
    )


def annotated_progress(project: Project) -> Progress:
    """Return the Progress of a project annotated by with_progress."""
    return Progress(
        pages=project.page_count,
        **{name: getattr(project, f"{name}_count") for name in PAGE_COUNTS},
    )


def current_picture_ids(page_ids: list[int]) -> dict[int, int]:
    """Return {page id: id of its current (complete) illustration} in one query."""
    return dict(
        Illustration.objects.filter(page__in=page_ids, status=Status.COMPLETE).values_list(
            "page_id", "pk"
        )
    )


def latest_and_current(model, page_ids: list[int]) -> tuple[dict, dict]:
    """Return {page id: latest job} and {page id: complete job} of a kind (Illustration,
    Clip) for the given pages, in one query."""
    # A page's latest job is its highest id; grouping by page beats a correlated subquery
    # per job on PostgreSQL by an order of magnitude on large projects.
    latest_ids = (
        model.objects.filter(page__in=page_ids)
        .values("page")
        .annotate(latest=Max("pk"))
        .values("latest")
    )
    jobs = model.objects.filter(
        Q(pk__in=Subquery(latest_ids)) | Q(page__in=page_ids, status=Status.COMPLETE)
    )
    latest: dict = {}
    current: dict = {}
    for job in jobs:
        if job.status == Status.COMPLETE:
            current[job.page_id] = job
        known = latest.get(job.page_id)
        if known is None or job.pk > known.pk:
            latest[job.page_id] = job
    return latest, current


@dataclass(frozen=True)
class ClipProgress:
    with_clip: int = 0
    active: int = 0
    failed: int = 0
    to_make: int = 0  # illustrated pages with no clip and none on its way


def with_clip_state(pages):
    """Annotate pages with where their clips stand: has_picture (a complete illustration to
    animate), has_clip, clip_active and latest_clip (the status of the latest clip job)."""
    clips = Clip.objects.filter(page=OuterRef("pk"))
    return pages.annotate(
        has_picture=Exists(
            Illustration.objects.filter(page=OuterRef("pk"), status=Status.COMPLETE)
        ),
        has_clip=Exists(clips.filter(status=Status.COMPLETE)),
        clip_active=Exists(clips.filter(status__in=ACTIVE_STATUSES)),
        latest_clip=Subquery(clips.order_by("-pk").values("status")[:1]),
    )


# Over pages annotated by with_clip_state, as for pictures above.
# A picture, no clip and none on its way: what "Generate missing clips" queues.
CLIP_TO_MAKE = Q(has_picture=True, has_clip=False, clip_active=False)
# ... and its latest clip job failed: what "Retry failed clips" queues.
CLIP_FAILED = CLIP_TO_MAKE & Q(latest_clip=Status.FAILED)


def missing_clip_pages(project: Project):
    """Return pages with a complete illustration but no complete clip and no active one."""
    return with_clip_state(project.pages.all()).filter(CLIP_TO_MAKE)


def failed_clip_pages(project: Project):
    """Return the pages missing a clip whose latest clip job failed."""
    return with_clip_state(project.pages.all()).filter(CLIP_FAILED)


def clip_progress(project: Project, progress: Progress) -> ClipProgress:
    """Return the project's clip counts (one cheap query while it has no clips at all)."""
    if not Clip.objects.filter(page__project=project).exists():
        return ClipProgress(to_make=progress.illustrated)
    pages = with_clip_state(Page.objects.filter(project=project))
    return ClipProgress(
        **pages.aggregate(
            with_clip=Count("pk", filter=Q(has_clip=True)),
            active=Count("pk", filter=Q(clip_active=True)),
            failed=Count("pk", filter=CLIP_FAILED),
            to_make=Count("pk", filter=CLIP_TO_MAKE),
        )
    )


def changed_pages(project: Project, *, since: datetime, now: datetime | None = None):
    """Return the project's pages whose text or jobs changed at or after `since`, and (by
    `now`) those whose worker fell silent since: the lease of its job ran out meanwhile,
    which changes its card though no row changed."""
    changed = Q(updated_at__gte=since)
    if now is not None:
        changed |= Q(status__in=WORKING_STATUSES, lease_expires_at__gte=since) & Q(
            lease_expires_at__lt=now
        )
    touched = Illustration.objects.filter(changed, page=OuterRef("pk"))
    clipped = Clip.objects.filter(page=OuterRef("pk"), updated_at__gte=since)
    return project.pages.filter(Q(updated_at__gte=since) | Exists(touched) | Exists(clipped))


def latest_runs(projects: list[Project]) -> dict[int, Run]:
    """Return each project's most recent run of its book (book_runs), in one query."""
    latest = book_runs().filter(project=OuterRef("project")).order_by("-created_at", "-pk")
    runs = Run.objects.filter(project__in=projects, pk=Subquery(latest.values("pk")[:1]))
    return {run.project_id: run for run in runs}


PROMPT_CHANGED = "Prompt changed"
REFERENCE_CHANGED = "Reference changed"


def outdated_reason(page: Page, illustration: Illustration) -> str:
    """Return why the picture no longer matches what the page would send today: "Prompt
    changed" (its prompt, text or the style guide), "Reference changed" (a character on it
    has another chosen picture or description, or its characters changed), or "".

    Reads the page's characters and the project's through .all(): prefetch them
    (with_references) to read many pages in a constant number of queries."""
    if not illustration.prompt_sent:
        return ""  # drawn before prompts were recorded: nothing to compare with
    if illustration.prompt_sent != compose_prompt(page):
        return PROMPT_CHANGED
    limit = references.reference_limit(project_provider(page.project))
    now = references.signature(references.page_references(page, limit=limit))
    if references.changed(illustration.references_sent, now):
        return REFERENCE_CHANGED
    return ""


def is_outdated(page: Page, illustration: Illustration) -> bool:
    """Return whether the picture was drawn from another prompt or other references than
    the page's today."""
    return bool(outdated_reason(page, illustration))


def page_sending(page: Page) -> dict:
    """Return what the prompt panel shows: the prompt the page would send now
    (composed_prompt), the characters whose pictures would go with it (references_now),
    and what its current picture was drawn from (sent_prompt, references_sent)."""
    limit = references.reference_limit(project_provider(page.project))
    current = page.illustrations.filter(status=Status.COMPLETE).first()
    return {
        "composed_prompt": compose_prompt(page),
        "references_now": references.page_references(page, limit=limit),
        "sent_prompt": current.prompt_sent if current else "",
        "references_sent": current.references_sent if current else [],
    }


def pages_without_characters(project: Project) -> list[Page] | None:
    """Return the project's pages that send no character's picture (none of the characters
    tagged on them has one, and no character with one goes on every page), in order; None
    when no character, setting or prop has a picture to send (nothing to say yet)."""
    sending = [
        character.pk
        for character in project.characters.all()
        if character.kind != character.Kind.STYLE and character.reference_id
    ]
    if not sending:
        return None
    if project.characters.filter(pk__in=sending, every_page=True).exists():
        return []
    return list(project.pages.exclude(characters__in=sending).order_by("number"))


def reference_changed_pages(project: Project, pages) -> list[Page]:
    """Return those of the project's pages whose current picture reads "Reference changed"
    (a constant number of queries)."""
    pages = list(pages)
    for page in pages:
        page.project = project
    _, current = latest_and_current(Illustration, [page.pk for page in pages])
    with_references(project, [page for page in pages if page.pk in current])
    return [
        page
        for page in pages
        if page.pk in current and outdated_reason(page, current[page.pk]) == REFERENCE_CHANGED
    ]


def with_references(project: Project, pages: list[Page]) -> None:
    """Fetch the characters of the pages and of the project (two queries), so that
    outdated_reason reads them without one query per page."""
    prefetch_related_objects([project], "characters")
    prefetch_related_objects(pages, "characters")


@dataclass(frozen=True)
class OutdatedPicture:
    """A current picture drawn from another prompt or other references than its page's
    today: which page, and whether the editor approved it."""

    page_id: int
    approved_at: datetime | None


def outdated_pictures(project: Project) -> list[OutdatedPicture]:
    """Return the project's current pictures that were drawn from another prompt or other
    references than their page's today (its text, prompt, the style guide or its
    characters changed), in two queries (three when a character sends a picture)."""
    return outdated_by_project([project])[project.pk]


def outdated_by_project(projects: list[Project]) -> dict[int, list[OutdatedPicture]]:
    """Return {project id: its out-of-date pictures (outdated_pictures)} for the given
    projects, in two queries whatever their number (four when a character sends a
    picture)."""
    by_id = {project.pk: project for project in projects}
    found: dict[int, list[OutdatedPicture]] = {pk: [] for pk in by_id}
    if not by_id:
        return found
    complete = Illustration.objects.filter(status=Status.COMPLETE)
    prefetch_related_objects(projects, "characters")
    # A book none of whose characters has a picture to send (most books) sends none with
    # any page: no page's characters need reading, and its pictures' prompts are compared
    # as plain values (a 2,000-page book has as many pictures).
    plain = {
        pk
        for pk, project in by_id.items()
        if not any(character.reference_id for character in project.characters.all())
    }
    if plain:
        rows = complete.filter(page__project__in=plain).values_list(
            "page__project",
            "page_id",
            "approved_at",
            "prompt_sent",
            "references_sent",
            "page__prompt",
            "page__text",
        )
        for project_id, page_id, approved_at, sent, references_sent, prompt, text in rows:
            style_guide = by_id[project_id].style_guide
            if sent and (
                sent != compose(Page.prompt_of(prompt, text), style_guide)
                or references.changed(references_sent, [])
            ):
                found[project_id].append(OutdatedPicture(page_id, approved_at))
    if len(plain) < len(by_id):
        current = list(
            complete.filter(page__project__in=by_id.keys() - plain)
            .select_related("page")
            .only(*OUTDATED_FIELDS)
        )
        for illustration in current:
            illustration.page.project = by_id[illustration.page.project_id]
        prefetch_related_objects([illustration.page for illustration in current], "characters")
        for picture in current:
            if is_outdated(picture.page, picture):
                found[picture.page.project_id].append(
                    OutdatedPicture(picture.page_id, picture.approved_at)
                )
    return found


OUTDATED_FIELDS = (
    "id",
    "page_id",
    "status",
    "prompt_sent",
    "references_sent",
    "approved_at",
    "page__id",
    "page__project_id",
    "page__text",
    "page__prompt",
)


def outdated_page_ids(project: Project, *, approved: bool = True) -> list[int]:
    """Return the ids of the pages whose current picture is out of date (outdated_pictures);
    approved=False leaves out the pictures the editor approved (bulk actions leave those
    alone)."""
    return [
        picture.page_id
        for picture in outdated_pictures(project)
        if approved or picture.approved_at is None
    ]


def outdated_counts(projects: list[Project]) -> dict[int, int]:
    """Return {project id: pictures out of date} for the given projects (see
    outdated_by_project)."""
    return {pk: len(pictures) for pk, pictures in outdated_by_project(projects).items()}


def latest_illustration_run_id(project: Project) -> int | None:
    """Return the id of the latest run that queued pictures for the project (runs are
    numbered in order)."""
    return Illustration.objects.filter(page__project=project).aggregate(run=Max("run_id"))["run"]


def latest_run(project: Project) -> Run | None:
    """Return the project's most recent run of its book (open or over; book_runs), or None
    before the first."""
    return book_runs().filter(project=project).order_by("-created_at", "-pk").first()


MONEY = DecimalField(max_digits=12, decimal_places=4)


def spending(project, *, run=None) -> Coalesce:
    """Return what a project's calls have cost (in one run, if given), as an expression for
    annotate() and values(); `project` may be an OuterRef.

    The one definition of spend: the budget, the review page, the admin and
    generation_status all read it; it reads the spend ledger, which outlives deleted pages.
    """
    costs = SpendEntry.objects.filter(project_id=getattr(project, "pk", project))
    if run is not None:
        costs = costs.filter(run_id=getattr(run, "pk", run))
    total = costs.order_by().values("project_id").annotate(total=Sum("amount")).values("total")
    return Coalesce(Subquery(total, output_field=MONEY), Value(Decimal(0)), output_field=MONEY)


def project_spent(project_id: int) -> Decimal:
    """Return what the project's calls have cost so far."""
    projects = Project.objects.filter(pk=project_id)
    return amount(projects.values_list(spending(OuterRef("pk")), flat=True).first())


@dataclass(frozen=True)
class Spend:
    project: Decimal
    run: Decimal


def ledger_summary(project_id: int) -> dict:
    """Return what the spend ledger knows of a project's calls: {"paid_calls": calls the
    service charged, "unconfirmed_calls": calls it most likely charged without a whole
    answer, "spent": their total, as text} (one query; each call is entered once)."""
    rows = SpendEntry.objects.filter(project_id=project_id).aggregate(
        paid=Count("pk", filter=Q(confirmed=True)),
        unconfirmed=Count("pk", filter=Q(confirmed=False)),
        spent=Sum("amount"),
    )
    return {
        "paid_calls": rows["paid"],
        "unconfirmed_calls": rows["unconfirmed"],
        "spent": str(amount(rows["spent"])),  # the stored precision, as "cost" has
    }


def spend(project: Project, run: Run | None) -> Spend:
    """Return what the project's calls have cost, in all and in its latest run (one query)."""
    totals = (
        Project.objects.filter(pk=project.pk)
        .values(
            total=spending(OuterRef("pk")),
            in_run=spending(OuterRef("pk"), run=run) if run else Value(Decimal(0)),
        )
        .first()
    ) or {}
    return Spend(project=amount(totals.get("total")), run=amount(totals.get("in_run")))


@dataclass(frozen=True)
class ReviewHeader:
    """What the review page's header shows: progress, run, spend, price and the service."""

    progress: Progress
    run: Run | None
    spend: Spend
    clips: ClipProgress
    price: Decimal | None  # of one picture at current settings; None: unknown
    estimate: Decimal | None  # of what Generate missing queues, one attempt each
    account: dict  # the image service's provider account: accounts.state_of
    service: str  # how editors know the project's image service: "Gemini (gemini-2.5-…)"
    alternatives: list  # other configured services to continue with, after a halt
    polling: bool  # whether the page keeps asking for changes
    # Pages waiting for a worker while no worker cluster is alive (0 when one is, or
    # when nothing waits): "No workers are running, so 24 pages are waiting."
    waiting_for_workers: int = 0
    # The database's clock when the header was read: the poll's cursor, since every change
    # the poll looks for is stamped by that clock.
    now: datetime | None = None
    # Pictures drawn from a prompt that has changed since (the page, the style guide, …),
    # and what regenerating them costs at current settings (one attempt each).
    outdated: int = 0
    regenerable: int = 0  # out of date, not approved, none on its way: what Regenerate queues
    outdated_estimate: Decimal | None = None
    locked: int = 0  # out of date and approved, none on its way: redrawn only one by one
    # Pages whose worker has been silent for three beats (its lease ran out; the sweep has
    # not taken it back yet): "Waiting for the worker", not on their way as if live.
    silent: int = 0
    last_heard: datetime | None = None  # the latest beat of those workers
    # When the next lease of a working job runs out, if none renews it: a card turns to
    # "Waiting for the worker" then, though no row changes, so a tab asks again by then.
    due: datetime | None = None
    # Economy mode (generation.batches): one picture's batch price where the project's
    # service and model take batches (None: Generate offers Now only), and the run's
    # batches, whose progress the header shows together.
    economy_price: Decimal | None = None
    batches: RunBatches | None = None
    in_batch: int = 0  # pages a batch holds: on their way, not "generating" by a worker
    # The project's model is shut down or soon will be (its notice, and the one-click
    # replacement offered); None while it is current.
    model_notice: "ModelNotice | None" = None
    # After a halt for the project's model (shut down, or no longer known to the service):
    # the model offered in one click ("" when none).
    model_offer: str = ""

    @property
    def primary(self) -> str:
        """Return the header's one primary action, the next useful one: "resume" (a run is
        paused or halted, or its service account is), "pause" (a run is running), "generate"
        (pages were never drawn), "retry" (pages failed), "regenerate" (pictures are out
        of date), "approve" (pictures wait for approval) or "" (nothing to do, or a run is
        stopping; rejected pages wait for their prompts to be edited, on their cards)."""
        run, progress = self.run, self.progress
        state = run.state if run is not None else None
        if state in (Run.State.PAUSED, Run.State.HALTED):
            return "resume"
        if state == Run.State.RUNNING:
            if self.account.get("state") == "halted":
                return "resume"
            # A batch is one job at the service: Stop cancels it; there is no pause.
            return "" if run.mode == Run.Mode.ECONOMY else "pause"
        if state == Run.State.STOPPING:
            return ""
        if self.to_queue:
            return "generate"
        if progress.failed:
            return "retry"
        if self.regenerable:
            return "regenerate"
        if progress.to_approve:
            return "approve"
        return ""

    @property
    def economy(self) -> dict | None:
        """Return the economy choice's estimates (half price) of what Generate missing,
        Retry failed and Regenerate changed pages queue; None where batches are not
        offered."""
        if self.economy_price is None:
            return None
        price = self.economy_price
        return {
            "price": price,
            "missing": price * self.to_queue,
            "failed": price * self.progress.failed,
            "outdated": price * self.regenerable,
        }

    @property
    def retry_estimate(self) -> Decimal | None:
        """Return what Retry failed queues at current settings, one attempt each (None:
        the price is unknown)."""
        return None if self.price is None else self.price * self.progress.failed

    @property
    def on_its_way(self) -> int:
        """Pages with a picture on its way: missing ones, and ones being drawn again (not
        those whose worker fell silent)."""
        return self.progress.on_way + self.progress.redrawing - self.silent

    @property
    def drawing(self) -> int:
        """Pages a live worker is on (generating, or waiting to retry)."""
        return self.progress.generating - self.silent - self.in_batch

    @property
    def to_queue(self) -> int:
        """Missing pages that "Generate missing" would queue (Progress.to_generate)."""
        return self.progress.to_generate

    @property
    def title(self) -> str:
        """The tab's title, so a tab in the background says how the run ended."""
        progress, run = self.progress, self.run
        counted = f"{progress.illustrated}/{progress.pages}"
        if progress.complete:
            return f"✓ {counted}"
        if run is not None and run.state == Run.State.HALTED:
            return f"⏸ Halted {counted}"
        if run is not None and run.state in (Run.State.RUNNING, Run.State.STOPPING):
            return f"⟳ {counted}"
        if progress.failed or progress.rejected:
            return f"✗ {counted}"
        return counted


def shown_account(state: dict) -> dict:
    """Return the account's state as any project on it may see it: state and reason, without
    the service's words (they may quote the prompt of the project whose call failed; that
    project's halted run shows them)."""
    return {**state, "message": without_service_text(state["message"])}


def project_account_key(project: Project, run: Run | None) -> str:
    """Return the provider account the project's pictures are drawn through: the one its
    run (the latest) records, which the workers that call it named, while that is still an
    account of the project's service; else the one this process would call. A command run
    in a shell without the service's key reads the same account as the page."""
    provider = project_provider(project)
    if run is not None and run.account and run.account.split("|", 1)[0] == provider.name:
        return run.account
    return account_of(provider)


def review_header(project: Project) -> ReviewHeader:
    """Return the review page's header for the project, in a constant number of queries."""
    progress = project_progress(project)
    run = latest_run(project)
    provider = project_provider(project)
    model = getattr(provider, "model", "")
    price = price_per_image(provider.name, model, settings.STUDIO_IMAGE_SIZE)
    now = db_now()
    pictures = outdated_pictures(project)
    outdated = len(pictures)
    # A page whose new picture is on its way is not offered again (regenerate_outdated
    # skips it too): one more query, only when some picture is out of date and some page
    # with a picture has a new one on its way.
    redrawing = set()
    if pictures and progress.redrawing:
        redrawing = set(
            Illustration.objects.filter(
                page__in=[picture.page_id for picture in pictures], status__in=ACTIVE_STATUSES
            ).values_list("page_id", flat=True)
        )
    settled = [picture for picture in pictures if picture.page_id not in redrawing]
    # Regenerate changed pages leaves approved pictures alone.
    regenerable = sum(1 for picture in settled if picture.approved_at is None)
    silent = working_leases(project, now=now) if progress.generating else {}
    no_workers = 0
    if run is not None and run.state in (Run.State.RUNNING, Run.State.STOPPING) and progress.busy:
        # Only a project with work waiting asks whether any worker is alive.
        try:
            no_workers = 0 if workers.alive(now=now) else progress.queued + progress.generating
        except UNREACHABLE:  # Redis keeps the heartbeats: unknown, so no warning
            no_workers = 0
    economy_price = batch_price(provider) if supports_batch(provider.name, model) else None
    run_batches = of_run(run)
    in_batch = 0
    if run_batches is not None and progress.generating:  # one query, only for an economy run
        in_batch = Illustration.objects.filter(
            page__project=project, status__in=WORKING_STATUSES, claimed_by__startswith="batch:"
        ).count()
    return ReviewHeader(
        economy_price=economy_price,
        batches=run_batches,
        in_batch=in_batch,
        progress=progress,
        run=run,
        spend=spend(project, run),
        clips=clip_progress(project, progress),
        price=price,
        estimate=None if price is None else price * progress.to_generate,
        account=shown_account(accounts.state_of(project_account_key(project, run))),
        service=service_label(image_service_of(project), model),
        alternatives=[
            choice
            for choice in configured_image_services()
            if choice.name not in (image_service_of(project), "embedded")
        ],
        model_notice=model_notice(provider.name, model, today=now.date()),
        model_offer=catalogue.offer(provider.name, model, now.date())
        if run is not None
        and run.state == Run.State.HALTED
        and run.halt_reason == Run.HaltReason.CONFIG
        else "",
        polling=progress.busy
        or (run is not None and run.state in (Run.State.RUNNING, Run.State.STOPPING)),
        waiting_for_workers=no_workers,
        now=now,
        outdated=outdated,
        regenerable=regenerable,
        locked=len(settled) - regenerable,
        outdated_estimate=None if price is None else price * regenerable,
        silent=silent.get("silent") or 0,
        last_heard=liveness.last_heard(silent.get("latest")),
        due=silent.get("due"),
    )


@dataclass(frozen=True)
class ModelNotice:
    """What the settings page, the review header and check_services say of a model its
    service has shut down (state "retired") or will within 30 days ("retiring")."""

    service: str
    model: str
    state: str  # catalogue.RETIRING or catalogue.RETIRED
    shutdown: object  # a date
    text: str  # "gemini-2.5-flash-image was shut down … on 2026-10-02 … Use … instead."
    offer: str  # the model offered in one click ("" when there is none)


def model_notice(service: str, model: str, *, today=None) -> ModelNotice | None:
    """Return the notice of a service's model when it is retiring or retired, else None
    (today: the database's date unless given)."""
    today = today or db_now().date()
    listed = catalogue.model(service, model)
    state = listed.state(today)
    if state == catalogue.CURRENT:
        return None
    return ModelNotice(
        service=service,
        model=model,
        state=state,
        shutdown=listed.shutdown,
        text=listed.notice(today),
        offer=catalogue.offer(service, model, today),
    )


def project_model(project: Project) -> str:
    """Return the model that draws the project's pictures (its own choice, or its service's
    configured model)."""
    return getattr(project_provider(project), "model", "")


def project_model_notice(project: Project, *, today=None) -> ModelNotice | None:
    """Return the notice of the project's model (None while it is current)."""
    return model_notice(image_service_of(project), project_model(project), today=today)


def model_offer(project: Project, *, today=None) -> str:
    """Return the model offered in one click after a halt for the project's model: its
    replacement, or its service's default when that is another current model."""
    today = today or db_now().date()
    return catalogue.offer(image_service_of(project), project_model(project), today)


def model_choices(project: Project, *, today=None) -> list[str]:
    """Return the models a project may choose for its image service: the catalogue's
    models of that service that are not shut down."""
    today = today or db_now().date()
    return [
        listed.name
        for listed in catalogue.models(image_service_of(project))
        if listed.state(today) != catalogue.RETIRED
    ]


def model_form_choices(*, today=None) -> list[tuple[str, str]]:
    """Return the settings form's model choices: "the service's configured model", then the
    catalogue's models of each configured service that are not shut down, by service."""
    from .pricing import money

    today = today or db_now().date()
    groups = []
    for service in configured_image_services():
        if service.name == "embedded":
            continue
        options = []
        for listed in catalogue.models(service.name):
            if listed.state(today) == catalogue.RETIRED:
                continue
            label = f"{listed.name} · {money(listed.price(settings.STUDIO_IMAGE_SIZE))} an image"
            if listed.state(today) == catalogue.RETIRING:
                label += f" · shut down on {listed.shutdown:%Y-%m-%d}"
            options.append((listed.name, label))
        if options:
            groups.append((service.label, options))
    return [("", "The service's configured model"), *groups]


def model_problem(service: str, model: str, *, today=None) -> str:
    """Return why a project may not draw with a service's model ("" when it may): not one of
    the service's models, shut down, or a size rule STUDIO_IMAGE_SIZE breaks."""
    today = today or db_now().date()
    listed = catalogue.model(service, model)
    label = IMAGE_SERVICES.get(service, (service,))[0]
    if not listed.known:
        return f"{model} is not a model of {label}."
    if listed.state(today) == catalogue.RETIRED:
        return catalogue.refusal(service, model, today).split(" The project")[0]
    if problem := listed.size_problem(settings.STUDIO_IMAGE_SIZE):
        return f"{problem} The studio draws at {settings.STUDIO_IMAGE_SIZE} (STUDIO_IMAGE_SIZE)."
    return ""


def working_leases(project: Project, *, now: datetime) -> dict:
    """Return, over the project's pictures a worker holds, in one query: how many pages'
    workers have been silent for three beats (their lease ran out by `now`), the latest
    lease among those, and when the next live one runs out."""
    working = Illustration.objects.filter(page__project=project, status__in=WORKING_STATUSES)
    lapsed = Q(lease_expires_at__lt=now)
    return working.aggregate(
        silent=Count("page", distinct=True, filter=lapsed),
        latest=Max("lease_expires_at", filter=lapsed),
        due=Min("lease_expires_at", filter=~lapsed),
    )


def story_phase_available() -> bool:
    """Return whether a text service is configured to write a project's pages from a premise."""
    return text_provider_configured()


def service_label(name: str, model: str = "") -> str:
    """Return how editors know an image service: its label, and its model if it has one."""
    label = IMAGE_SERVICES.get(name, (name,))[0]
    return f"{label} ({model})" if model and name != "embedded" else label


def image_service_choices() -> list[tuple[str, str]]:
    """Return the image services a project may choose (those whose keys are configured,
    and the offline renderer), as form choices naming model and price, and "no references"
    for a model that takes no reference pictures (its pages ignore the characters')."""
    from .pricing import money

    return [
        (
            choice.name,
            f"{service_label(choice.name, choice.model)} · {money(choice.price)} an image"
            + ("" if choice.max_references else " · no references"),
        )
        for choice in configured_image_services()
    ]


def project_service_name(project: Project) -> str:
    """Return the name of the image service that draws the project's pictures."""
    return image_service_of(project)


@dataclass(frozen=True)
class BudgetCheck:
    """Generate Missing would pass the project's budget: what it would queue and cost, what
    the budget leaves (after the pictures on their way), and how many pictures that is."""

    pages: int
    estimate: Decimal
    left: Decimal
    on_way: int
    fit: int


def budget_check(project: Project) -> BudgetCheck | None:
    """Return what Generate Missing would cost against the budget when its estimate passes
    what the budget leaves (spent, and the pictures on their way at the current price,
    taken off); None when it fits, or the project has no budget or no known price (the
    engine then halts before the first call, saying which price is missing)."""
    if project.budget is None:
        return None
    progress = project_progress(project)
    price = picture_price(project)
    if not progress.to_generate or not price:
        return None
    on_way = progress.active
    left = max(project.budget - project_spent(project.pk) - price * on_way, Decimal(0))
    estimate = price * progress.to_generate
    if estimate <= left:
        return None
    fit = min(int(left // price), progress.to_generate)
    return BudgetCheck(progress.to_generate, estimate, left, on_way, fit)


def economy_price(project: Project) -> Decimal | None:
    """Return one picture's batch price (half the live one) where the project's service and
    model take batches; None where economy mode is not offered."""
    provider = project_provider(project)
    if not supports_batch(provider.name, getattr(provider, "model", "")):
        return None
    return batch_price(provider)


def picture_price(project: Project) -> Decimal | None:
    """Return what one picture of the project costs at current settings (None: unknown)."""
    provider = project_provider(project)
    return price_per_image(
        provider.name, getattr(provider, "model", ""), settings.STUDIO_IMAGE_SIZE
    )
