"""Kinds of job the one engine runs: what each asks a service for and what it keeps.

The engine owns claims, leases, retries, halts and attempt rows for every kind; a kind
only says how to build its request, which provider to call, and how to store a result.
"""

from decimal import Decimal

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Now

from studio.models import (
    MAX_PAGE_CHARS,
    MAX_PAGES,
    MAX_PROMPT_CHARS,
    Character,
    Page,
    Project,
    ReferenceImage,
    reference_upload_to,
)
from studio.text import clean_page_text

from . import references
from .clock import db_now
from .models import (
    ACTIVE_STATUSES,
    Clip,
    CoverJob,
    GenerationAttempt,
    Illustration,
    Job,
    SheetJob,
    StoryJob,
    Upscale,
    cover_upload_to,
    illustration_upload_to,
    upscale_upload_to,
)
from .pricing import charged, price_per_image, price_per_upscale
from .prompts import compose_prompt
from .providers import (
    account_of,
    get_clip_provider,
    get_provider,
    get_text_provider,
    get_upscale_provider,
    project_provider,
    services_on_account,
)
from .providers.base import (
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    AwaitingService,
    ClipRequest,
    GeneratedClip,
    GeneratedImage,
    ImageRequest,
    ProviderError,
    Reference,
    Rejected,
    StartOver,
    StoryRequest,
    UpscaleRequest,
    verify_image,
)
from .retry import Interrupted
from .story import story_prompt


def _insert_jobs(model, rows: list[dict]) -> None:
    """Insert one job per row, all stamped at once by the database's clock. Left to the
    columns' default, every row would carry DEFAULT, which keeps PostgreSQL off Django's
    one-array-per-column bulk insert (2,000 jobs: 1.5 s, stamped 0.6 s)."""
    now = db_now()
    model.objects.bulk_create(model(created_at=now, updated_at=now, **row) for row in rows)


def recorded(prompt: str, provider, **more) -> dict:
    """Return the fields that record a call on its job (Kind.prepare): the prompt sent, the
    service and model it went to, and the kind's own (its size, its references)."""
    return {
        "prompt_sent": prompt,
        "provider": provider.name,
        "model": getattr(provider, "model", ""),
        **more,
    }


class JobKind:
    name: str
    model: type[Job]
    attempt_field: str  # the GenerationAttempt field that points at this kind of job
    service: str  # how messages name the service: "image service"
    claim_order: tuple[str, ...] = ("-priority", "pk")
    select_related: tuple[str, ...] = ()
    # Its calls go to the project's image service: the run records the account they use.
    records_account = False

    def provider(self, job: Job | None = None):
        """Return the provider that works the job (the kind's own, without a job)."""
        raise NotImplementedError

    def provider_for(self, project):
        """Return the provider that works this kind's jobs of a project (anything with an
        image_service attribute)."""
        return self.provider()

    def runs_on_account(self, key: str) -> Q:
        """Return a condition on runs: they have work of this kind for the account."""
        if account_of(self.provider()) != key:
            return Q(pk__in=[])
        return Q(self._active_in_run())

    def _active_in_run(self) -> Exists:
        return Exists(self.model.objects.filter(run=OuterRef("pk"), status__in=ACTIVE_STATUSES))

    def claim_annotations(self) -> dict:
        """Return annotations to fetch with a claimed job, saving queries later."""
        return {}

    def project(self, job: Job) -> Project:
        raise NotImplementedError

    def create_jobs(self, run, page_ids: list[int]) -> None:
        """Queue one job per page in the run (kinds made per page)."""
        raise NotImplementedError

    def price(self, provider):
        """Return what one successful call costs (None: unknown or free)."""
        return None

    def charged(self, provider, result):
        """Return (cost, basis) of a successful call: what the service reported, or the
        configured price."""
        return self.price(provider), "price"

    def likely_price(self, job: Job):
        """Return what a call for the job most likely cost when no answer came (its worker
        was lost): the price list's figure for the provider and model it was sent to."""
        return None

    def prepare(self, job: Job, provider) -> tuple[str, dict]:
        """Return the prompt about to be sent and the fields that record it on the job
        (prompt, provider, model); the engine stores them with its first renewal."""
        raise NotImplementedError

    def call(self, worker, prompt: str, key: str):
        """Make one call for the worker's job, sending the idempotency key; return its
        result or raise a ProviderError."""
        raise NotImplementedError

    def storage_name(self, job: Job) -> str:
        """Return the name the call's file will be stored under, decided before the call
        so that the journal knows it ("" where it is decided on arrival, or no file)."""
        return ""

    def store(self, worker, result, name: str) -> str:
        """Write the result's file to storage (under `name`, when one was decided) before
        any transition; return the name it was stored under ("" for no file)."""
        return ""

    def stored_result(self, job: Job, name: str):
        """Return a result read back from a stored file (recovery: the call was paid and
        stored, the job never completed), or None when the file is not there whole."""
        return None

    def complete(self, worker, result) -> bool:
        """Mark the worker's job complete with its stored result, in one transaction, only
        if the worker still holds it. Return whether it did."""
        raise NotImplementedError


class PictureFile:
    """A kind whose job keeps its picture in its own `image` field: stored there before
    any transition, and found there again by recovery."""

    def store(self, worker, result, name: str) -> str:
        job = worker.job
        job.image.name = job.image.storage.save(name, ContentFile(result.content))
        return job.image.name

    def stored_result(self, job: Job, name: str):
        size = stored_picture_size(job.image.storage, name)
        if size is None:
            return None
        job.image.name = name
        return GeneratedImage(content=b"", width=size[0], height=size[1], model=job.model)


def keep_picture(worker, result) -> bool:
    """Complete the worker's job with its stored picture, one conditional UPDATE, only if
    the worker still holds it (a kind whose every picture is kept: covers, upscales)."""
    job = worker.job
    return bool(
        worker.mark_complete(
            image=job.image.name,
            width=result.width,
            height=result.height,
            model=result.model or job.model,
        )
    )


class IllustrationKind(PictureFile, JobKind):
    name = "illustration"
    model = Illustration
    attempt_field = "illustration"
    service = "image service"
    claim_order = ("-priority", "page__number")
    subject = "page"  # ImageRequest.subject: a book page; a sheet says "sheet"
    select_related = ("page__project",)
    records_account = True

    def provider(self, job: Illustration | None = None):
        # Each project chooses its image service (Settings), among those configured.
        return project_provider(job.page.project) if job is not None else get_provider()

    def provider_for(self, project):
        return project_provider(project)

    def runs_on_account(self, key: str) -> Q:
        names = services_on_account(key)
        if not names:
            return Q(pk__in=[])
        chosen = Q(project__image_service__in=names)
        if settings.STUDIO_IMAGE_PROVIDER in names:
            chosen |= Q(project__image_service="")
        return Q(self._active_in_run()) & chosen

    def project(self, job: Illustration) -> Project:
        return job.page.project

    def create_jobs(self, run, page_ids: list[int]) -> None:
        _insert_jobs(Illustration, [{"page_id": pk, "run": run} for pk in page_ids])

    def price(self, provider):
        return price_per_image(
            provider.name, getattr(provider, "model", ""), settings.STUDIO_IMAGE_SIZE
        )

    def charged(self, provider, result):
        model = result.model or getattr(provider, "model", "")
        return charged(provider.name, model, settings.STUDIO_IMAGE_SIZE, result)

    def likely_price(self, job: Illustration):
        return price_per_image(job.provider, job.model, job.size or settings.STUDIO_IMAGE_SIZE)

    def claim_annotations(self) -> dict:
        # A regeneration: the page's current picture must step aside on completion.
        current = Illustration.objects.filter(
            page=OuterRef("page"), status=Illustration.Status.COMPLETE
        )
        # Whether any character could lend the page a picture (the project's, or one
        # linked to the page, with a chosen picture): most books have none, and then
        # preparing the call reads no characters at all.
        referenced = Character.objects.filter(reference__isnull=False).filter(
            Q(project=OuterRef("page__project")) | Q(pages=OuterRef("page"))
        )
        return {"has_picture": Exists(current), "may_have_references": Exists(referenced)}

    def prepare(self, job: Illustration, provider) -> tuple[str, dict]:
        prompt = compose_prompt(job.page)
        if getattr(job, "may_have_references", True):
            characters = references.page_references(
                job.page, limit=references.reference_limit(provider)
            )
        else:
            characters = []
        job.references = load_references(characters)
        return prompt, recorded(
            prompt,
            provider,
            size=settings.STUDIO_IMAGE_SIZE,
            # Recorded with the prompt: what this picture was drawn from.
            references_sent=references.signature([c for c, _ in job.references]),
        )

    def caption(self, job) -> str:
        """Return the request's caption: what the picture is of ("Page 3"; a sheet, the
        character's name), which the embedded service draws on it."""
        return f"Page {job.page.number}"

    def call(self, worker, prompt: str, key: str):
        job = worker.job
        request = ImageRequest(
            prompt=prompt,
            size=settings.STUDIO_IMAGE_SIZE,
            seed=job.pk,
            idempotency_key=key,
            caption=self.caption(job),
            references=tuple(reference for _, reference in getattr(job, "references", ())),
            subject=self.subject,
        )
        if getattr(worker.provider, "asynchronous", False):
            return follow_service_job(worker, request, progress=True)
        return worker.provider.generate(request)

    def storage_name(self, job: Illustration) -> str:
        return illustration_upload_to(job, "illustration.png")

    def complete(self, worker, result) -> bool:
        job = worker.job
        keep = keep_variant if job.variant else replace_current
        return keep(
            worker,
            image=job.image.name,
            width=result.width,
            height=result.height,
            model=result.model or job.model,
        )


def story_pages(pages, *, wanted: int) -> list[tuple[str, str]]:
    """Return the (text, prompt) of the pages a text service wrote, held to the limits and
    cleaning of typed pages: at most `wanted` pages, text and prompt cut to their limits,
    control characters (NUL among them) removed, and pages left with no text dropped."""
    cleaned = (
        (clean_page_text(page.text, MAX_PAGE_CHARS), clean_page_text(page.prompt, MAX_PROMPT_CHARS))
        for page in pages[: min(wanted, MAX_PAGES)]
    )
    return [(text, prompt) for text, prompt in cleaned if text]


class StoryKind(JobKind):
    name = "story"
    model = StoryJob
    attempt_field = "story"
    service = "text service"
    select_related = ("project",)

    def provider(self, job: StoryJob | None = None):
        return get_text_provider()

    def price(self, provider):
        # The story is one text call of a cent or so: not held against the picture budget.
        return Decimal(0)

    def project(self, job: StoryJob) -> Project:
        return job.project

    def prepare(self, job: StoryJob, provider) -> tuple[str, dict]:
        prompt = story_prompt(self._request(job, key=""))
        return prompt, recorded(prompt, provider)

    def call(self, worker, prompt: str, key: str):
        return worker.provider.write(self._request(worker.job, key=key))

    def _request(self, job: StoryJob, *, key: str) -> StoryRequest:
        return StoryRequest(
            premise=job.premise,
            audience=job.audience,
            pages=job.pages_wanted,
            idempotency_key=key,
            style_guide=job.project.style_guide,
        )

    def complete(self, worker, result) -> bool:
        job = worker.job
        with transaction.atomic():
            done = worker.mark_complete(pages_written=0, model=result.model or job.model)
            if not done:
                transaction.set_rollback(True)
                return False
            # The story phase never overwrites pages: if the editor added some meanwhile,
            # theirs stand.
            if not job.project.pages.exists():
                pages = story_pages(result.pages, wanted=job.pages_wanted)
                Page.objects.bulk_create(
                    Page(project=job.project, number=n, text=text, prompt=prompt)
                    for n, (text, prompt) in enumerate(pages, 1)
                )
                StoryJob.objects.filter(pk=job.pk).update(pages_written=len(pages))
        return True


class ClipKind(JobKind):
    name = "clip"
    model = Clip
    attempt_field = "clip"
    service = "clip service"
    claim_order = ("-priority", "page__number")
    select_related = ("page__project", "source")

    def provider(self, job: Clip | None = None):
        return get_clip_provider()

    def price(self, provider):
        # Only the offline renderer has a known price (nothing); a budget with a paid clip
        # service and no STUDIO_PRICES entry for it halts rather than being ignored.
        return price_per_image(provider.name, getattr(provider, "model", ""), "clip")

    def likely_price(self, job: Clip):
        return price_per_image(job.provider, job.model, "clip")

    def project(self, job: Clip) -> Project:
        return job.page.project

    def create_jobs(self, run, page_ids: list[int]) -> None:
        # A clip animates the page's current picture.
        sources = dict(
            Illustration.objects.filter(
                page__in=page_ids, status=Illustration.Status.COMPLETE
            ).values_list("page_id", "pk")
        )
        _insert_jobs(
            Clip, [{"page_id": pk, "run": run, "source_id": sources.get(pk)} for pk in page_ids]
        )

    def claim_annotations(self) -> dict:
        current = Clip.objects.filter(page=OuterRef("page"), status=Clip.Status.COMPLETE)
        return {"has_picture": Exists(current)}

    def prepare(self, job: Clip, provider) -> tuple[str, dict]:
        prompt = f"Gently animate this picture-book illustration. {compose_prompt(job.page)}"[:2000]
        return prompt, recorded(prompt, provider)

    def call(self, worker, prompt: str, key: str):
        job, provider = worker.job, worker.provider
        if job.source is None or not job.source.image:
            raise Rejected("The page has no complete illustration to animate.")
        with job.source.image.open("rb") as source:
            request = ClipRequest(
                image=source.read(),
                prompt=prompt,
                seconds=settings.STUDIO_CLIP_SECONDS,
                idempotency_key=key,
            )
        if not provider.asynchronous:
            return provider.render(request)
        return follow_service_job(worker, request)

    def store(self, worker, result, name: str) -> str:
        # A clip's name waits for its type; the journal records it with the call's end.
        job = worker.job
        extension = {"video/mp4": "mp4", "image/gif": "gif"}.get(result.content_type, "webp")
        job.video.save(f"clip.{extension}", ContentFile(result.content), save=False)
        return job.video.name

    def stored_result(self, job: Clip, name: str):
        storage = job.video.storage
        if not name or not storage.exists(name):
            return None
        job.video.name = name
        types = {"mp4": "video/mp4", "gif": "image/gif", "webp": "image/webp"}
        return GeneratedClip(content=b"", content_type=types[name.rsplit(".", 1)[-1]])

    def complete(self, worker, result) -> bool:
        job = worker.job
        return replace_current(
            worker,
            video=job.video.name,
            content_type=result.content_type,
            model=result.model or job.model,
        )


class SheetKind(IllustrationKind):
    """A character sheet: drawn by the project's image service like a page, kept as a new
    version of the character's reference picture."""

    name = "sheet"
    model = SheetJob
    attempt_field = "sheet"
    claim_order = ("-priority", "pk")
    subject = "sheet"
    select_related = ("character__project",)

    def provider(self, job: SheetJob | None = None):
        return project_provider(job.character.project) if job is not None else get_provider()

    def project(self, job: SheetJob) -> Project:
        return job.character.project

    def claim_annotations(self) -> dict:
        return {}

    def prepare(self, job: SheetJob, provider) -> tuple[str, dict]:
        prompt = references.sheet_prompt(job.character)
        # The book's style reference, if it has one, sets the sheet's look too.
        style = [
            character
            for character in job.character.project.characters.exclude(pk=job.character_id)
            if character.kind == Character.Kind.STYLE and character.reference_id
        ]
        job.references = load_references(style[: references.reference_limit(provider)])
        return prompt, recorded(prompt, provider, size=settings.STUDIO_IMAGE_SIZE)

    def caption(self, job: SheetJob) -> str:
        return job.character.name

    def storage_name(self, job: SheetJob) -> str:
        return reference_upload_to(ReferenceImage(character=job.character), "sheet.png")

    def store(self, worker, result, name: str) -> str:
        return ReferenceImage.image.field.storage.save(name, ContentFile(result.content))

    def stored_result(self, job: SheetJob, name: str):
        size = stored_picture_size(ReferenceImage.image.field.storage, name)
        if size is None:
            return None
        return GeneratedImage(content=b"", width=size[0], height=size[1], model=job.model)

    def complete(self, worker, result) -> bool:
        """Keep the sheet as a new version of the character's picture (chosen at once if
        the character had none; otherwise the editor picks it), only if the worker still
        holds the job."""
        job = worker.job
        version = ReferenceImage(
            character=job.character,
            source=ReferenceImage.Source.DRAWN,
            content_type="image/png",
            width=result.width,
            height=result.height,
        )
        version.image.name = worker.stored_name
        with transaction.atomic():
            version.save()
            done = worker.mark_complete(reference=version, model=result.model or job.model)
            if done:
                Character.objects.filter(pk=job.character_id, reference__isnull=True).update(
                    reference=version
                )
            else:
                # The file stays: the journal names it, and whoever works the job next
                # completes it from there.
                transaction.set_rollback(True)
        return bool(done)


def fitting_scale(asked: int, width: int | None, height: int | None) -> int:
    """Return the scale to ask for: `asked`, lowered so that the upscaled picture stays
    within what the studio accepts from a service (MAX_IMAGE_SIDE a side, MAX_IMAGE_PIXELS
    in all), else it would be paid for and refused on arrival; at least 1."""
    if not width or not height:
        return asked
    scale = asked
    while scale > 1 and (
        max(width, height) * scale > MAX_IMAGE_SIDE or width * height * scale**2 > MAX_IMAGE_PIXELS
    ):
        scale -= 1
    return scale


class UpscaleKind(PictureFile, JobKind):
    """The print export's upscale step: a page's current picture, made larger by a service's
    super-resolution model, kept beside it as a print-only derivative (the page's picture
    and its versions stay as they are)."""

    name = "upscale"
    model = Upscale
    attempt_field = "upscale"
    service = "upscale service"
    claim_order = ("-priority", "page__number")
    select_related = ("page__project", "source")

    def provider(self, job: Upscale | None = None):
        return get_upscale_provider()

    def project(self, job: Upscale) -> Project:
        return job.page.project

    def create_jobs(self, run, page_ids: list[int]) -> None:
        # Each upscales the page's current picture, at the scale the service is asked for.
        sources = {
            page_id: (pk, width, height)
            for page_id, pk, width, height in Illustration.objects.filter(
                page__in=page_ids, status=Illustration.Status.COMPLETE
            ).values_list("page_id", "pk", "width", "height")
        }
        asked = get_upscale_provider().scale
        _insert_jobs(
            Upscale,
            [
                {
                    "page_id": page_id,
                    "run": run,
                    "source_id": pk,
                    "scale": fitting_scale(asked, width, height),
                }
                for page_id, (pk, width, height) in sources.items()
            ],
        )

    def price(self, provider):
        return price_per_upscale(provider.name, getattr(provider, "model", ""))

    def likely_price(self, job: Upscale):
        return price_per_upscale(job.provider, job.model)

    def prepare(self, job: Upscale, provider) -> tuple[str, dict]:
        return "", {"provider": provider.name, "model": getattr(provider, "model", "")}

    def call(self, worker, prompt: str, key: str):
        job = worker.job
        if not job.source.image:
            raise Rejected("The page's picture has no file to upscale.")
        with job.source.image.open("rb") as source:
            request = UpscaleRequest(image=source.read(), scale=job.scale, idempotency_key=key)
        return follow_service_job(worker, request, progress=True)

    def storage_name(self, job: Upscale) -> str:
        return upscale_upload_to(job, "upscale.png")

    def complete(self, worker, result) -> bool:
        return keep_picture(worker, result)


class CoverKind(IllustrationKind):
    """The front cover's own picture: drawn by the project's image service like a page
    (the cover prompt, the book's characters' pictures as references), kept as a new
    version of the project's generated cover."""

    name = "cover"
    model = CoverJob
    attempt_field = "cover"
    claim_order = ("-priority", "pk")
    select_related = ("project",)

    def provider(self, job: CoverJob | None = None):
        return project_provider(job.project) if job is not None else get_provider()

    def project(self, job: CoverJob) -> Project:
        return job.project

    def claim_annotations(self) -> dict:
        return {}

    def prepare(self, job: CoverJob, provider) -> tuple[str, dict]:
        prompt = references.cover_prompt(job.project)
        cast = references.cover_references(job.project, limit=references.reference_limit(provider))
        job.references = load_references(cast)
        return prompt, recorded(prompt, provider, size=settings.STUDIO_IMAGE_SIZE)

    def caption(self, job: CoverJob) -> str:
        return job.project.title

    def storage_name(self, job: CoverJob) -> str:
        return cover_upload_to(job, "cover.png")

    def complete(self, worker, result) -> bool:
        # Every cover drawn is kept: completing is one conditional UPDATE.
        return keep_picture(worker, result)


def load_references(characters: list[Character]) -> list[tuple[Character, Reference]]:
    """Return the characters' chosen pictures as labelled references, in order; a picture
    that cannot be read from storage is left out (and so not recorded as sent)."""
    loaded = []
    for character in characters:
        version = character.reference
        try:
            with version.image.open("rb") as stored:
                content = stored.read()
        except (OSError, ValueError):
            continue
        loaded.append(
            (
                character,
                Reference(
                    name=character.name,
                    description=character.description,
                    content=content,
                    kind=character.kind,
                ),
            )
        )
    return loaded


def replace_current(worker, **fields) -> bool:
    """Make the worker's job the page's current one of its kind, in one transaction, only
    if the worker still holds it; the page's previous one (a regeneration) steps aside only
    now. Return whether it did; if not, the stored file stays where the journal names it,
    for whoever works the job next."""
    job, model = worker.job, worker.model
    if getattr(job, "has_picture", True):
        with transaction.atomic():
            model.objects.replace_current(page_id=job.page_id)
            done = worker.mark_complete(**fields)
            if not done:
                transaction.set_rollback(True)
    else:
        # Nothing steps aside: completing is one conditional UPDATE, atomic by itself.
        done = worker.mark_complete(**fields)
    return bool(done)


def keep_variant(worker, **fields) -> bool:
    """Keep a variant's picture as a version beside the page's current one, for the editor
    to pick; a page with no picture takes the first variant to finish as its picture.
    Return whether the worker still held the job."""
    job = worker.job
    done = 0
    with transaction.atomic():
        current = Illustration.objects.filter(
            page_id=job.page_id, status=Illustration.Status.COMPLETE
        )
        if not current.exists():
            try:
                with transaction.atomic():
                    done = worker.mark_complete(**fields)
            except IntegrityError:  # another variant of the page took that place first
                done = 0
        if not done:
            done = worker.mark_complete(status=Illustration.Status.REPLACED, **fields)
    return bool(done)


def follow_service_job(worker, request, *, progress: bool = False):
    """Make one call to an asynchronous service (a prediction, a queued request): create
    its job once, storing the id before the first poll so whoever works this job next
    polls the same one, then poll it to its result. Stop cancels it at the service."""
    job, provider, model = worker.job, worker.provider, worker.model
    rows = model.objects.filter(pk=job.pk)
    # With a webhook, the service calls when its job ends: nobody waits for it here.
    webhook = bool(getattr(provider, "webhook", ""))
    if not job.provider_job_id:
        job.provider_job_id = provider.create(request)
        rows.update(provider_job_id=job.provider_job_id)
        # The journal: this call created the service's job (and its charge); a worker
        # that polls it later confirms this row instead of entering a second one.
        GenerationAttempt.objects.filter(pk=worker.attempt.pk).update(
            provider_job_id=job.provider_job_id[:120]
        )
        if webhook and not provider.finished(job.provider_job_id):
            raise AwaitingService(job.provider_job_id)

    def keep_polling() -> bool:
        # A call in flight finishes whatever happens to its run but Stop: paused or halted,
        # the service's job goes on (and is billed) either way, and its picture may expire
        # before a Resume; so the worker keeps following it, its claim renewed.
        if worker.run_stopping():
            # Stopped: the job would go on (and be billed) at the service while nobody
            # waits for it, and "Generate missing" would pay for a second. Cancel it.
            rows.update(provider_job_id="", progress_note="")
            status = _cancel(provider, job.provider_job_id)
            worker.interrupt_note = (
                f"Stopped: the job was canceled at the {worker.kind.service} ({status})."
            )
            raise Interrupted()
        if not worker.renew():
            raise Interrupted()  # the claim was lost: whoever has the job follows it
        return True

    shown = {"note": job.progress_note}

    def note(text: str) -> None:
        if text != shown["note"]:  # a write only when what the card shows changes
            shown["note"] = text
            rows.update(progress_note=text[:120], updated_at=Now())

    extra = {"progress": note} if progress else {}
    sleep = worker.clock.sleep
    if webhook:
        # Woken by its webhook (or overdue): one look. A job still being made goes back
        # to waiting for its webhook instead of holding this worker.
        def sleep(seconds: float) -> None:
            raise AwaitingService(job.provider_job_id)

    try:
        result = provider.wait(job.provider_job_id, sleep=sleep, still_wanted=keep_polling, **extra)
    except StartOver:
        # That job is over without a result: the next attempt starts a new one.
        rows.update(provider_job_id="", progress_note="")
        job.provider_job_id = ""
        raise
    if shown["note"]:
        rows.update(progress_note="")
    return result


def stored_picture_size(storage, name: str) -> tuple[int, int] | None:
    """Return (width, height) of a stored picture, or None when it is missing or not a
    whole picture (a write cut off by a crash)."""
    if not name:
        return None
    try:
        with storage.open(name, "rb") as stored:
            return verify_image(stored.read())
    except (OSError, ValueError, ProviderError):
        return None


def _cancel(provider, job_id: str) -> str:
    """Cancel a job at the service; return what the service said (or why it could not)."""
    try:
        return provider.cancel(job_id) or "cancel requested"
    except ProviderError as error:
        return f"cancel failed: {error.message}"


KINDS: dict[str, JobKind] = {
    kind.name: kind
    for kind in (
        IllustrationKind(),
        StoryKind(),
        ClipKind(),
        SheetKind(),
        UpscaleKind(),
        CoverKind(),
    )
}
