"""Economy mode's small facts: which services and models take batch jobs, a picture's
price in a batch, and what pages and commands read of a run's batches. The batches' work
(the journal, upload, create, checks, results) is in generation.batch_jobs.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.utils.module_loading import import_string

from . import catalogue
from .models import Batch, Run
from .pricing import money, price_per_image
from .providers import project_provider

# The service clients that speak each batch API.
CLIENTS = {
    "openai": "generation.providers.openai_batch.OpenAIBatches",
    "gemini": "generation.providers.gemini_batch.GeminiBatches",
}
# A batch's share of the live price.
BATCH_DISCOUNT = Decimal("0.5")


def supports_batch(service: str, model: str) -> bool:
    """Return whether the service's model takes batch jobs: the catalogue says the model
    does (catalogue.model(service, model).batch) and the studio speaks the service's batch
    API. The one place that decides."""
    return service in CLIENTS and catalogue.model(service, model).batch


def project_supports_batch(project) -> bool:
    """Return whether the project's image service and model take batch jobs."""
    provider = project_provider(project)
    return supports_batch(provider.name, getattr(provider, "model", ""))


def batch_price(provider) -> Decimal | None:
    """Return one picture's price in a batch: half the live list price (None: unknown)."""
    price = price_per_image(
        provider.name, getattr(provider, "model", ""), settings.STUDIO_IMAGE_SIZE
    )
    return None if price is None else (price * BATCH_DISCOUNT).quantize(Decimal("0.0001"))


def client_for(service: str):
    """Return the batch client of a service (its provider, with the batch API's calls)."""
    return import_string(CLIENTS[service])()


class EconomyRefused(Exception):
    """Economy mode cannot take this work; the message says why, for the editor."""


def check_budget(project, *, pages: int, on_way: int, provider) -> None:
    """Refuse (EconomyRefused) a batch whose full estimate would pass what the project's
    budget leaves, naming both figures, before anything is sent."""
    if project.budget is None:
        return
    from .selectors import project_spent  # the selectors import this module

    price = batch_price(provider)
    if price is None:
        raise EconomyRefused(
            f"This project has a budget of {money(project.budget)}, but the studio knows no "
            f"price for {provider.name} images, so it cannot keep a batch to it."
        )
    live = price_per_image(
        provider.name, getattr(provider, "model", ""), settings.STUDIO_IMAGE_SIZE
    )
    left = project.budget - project_spent(project.pk) - (live or price) * on_way
    estimate = price * pages
    if estimate > left:
        raise EconomyRefused(
            f"The batch of {pages} picture{'s' if pages != 1 else ''} would cost about "
            f"{money(estimate)}, but the budget leaves {money(max(left, Decimal(0)))}. "
            "Nothing was sent: raise the budget in Settings, or draw fewer pages."
        )


def latest(run) -> Batch | None:
    """Return the run's latest batch (None for a run that sent none)."""
    if run is None or run.mode != Run.Mode.ECONOMY:
        return None
    return Batch.objects.filter(run=run).order_by("-pk").first()


def progress_words(batch: Batch | None) -> str:
    """Return the header's words for a batch: "validating", "in progress 5 of 24",
    "finalizing", "waiting to be sent", "expired: 12 of 24 came back"."""
    if batch is None:
        return ""
    if batch.step in (Batch.Step.NEW, Batch.Step.UPLOADED):
        return "waiting to be sent"
    status = (batch.status or "").replace("_", " ")
    if batch.status == "in_progress":
        return f"in progress {batch.completed} of {batch.total}"
    if batch.step == Batch.Step.COLLECTED and batch.status in ("expired", "cancelled"):
        return f"{status}: {batch.completed} of {batch.total} came back"
    return status


# How far a batch the service holds has come, by its status: the header names the least
# advanced of a run's batches. A batch not yet sent is behind them all (0), a collected one
# past them all (4); a status past finalizing, not yet collected, reads as finalizing.
ADVANCE = {"validating": 1, "in_progress": 2, "finalizing": 3, "cancelling": 3}
UNSENT = (Batch.Step.NEW, Batch.Step.UPLOADED)


def _advance(batch: Batch) -> int:
    if batch.step in UNSENT:
        return 0
    if batch.step == Batch.Step.COLLECTED:
        return 4
    return ADVANCE.get(batch.status, 3)


@dataclass(frozen=True)
class RunBatches:
    """What the review header shows of an economy run's batches, together: a run is split
    into several (pages with references go to an edits batch of their own; more lines than
    one batch takes go to more), and the editor follows the run, not one of them."""

    count: int  # the batches shown: the run's open ones, or all of them once none is open
    words: str  # "in progress 10 of 24", by the least advanced of them
    submitted_at: datetime | None  # when the first of them was sent (None: none was yet)
    open: bool  # some batch is not collected yet
    # Why batches wait to be sent, for the editor (the recovery's search of the service's
    # list could not finish, the service did not answer…): each reason once.
    waiting: tuple[str, ...] = ()


def of_run(run) -> RunBatches | None:
    """Return the run's batches as the review header shows them (None for a run that is
    not an economy run or sent none), in one query."""
    if run is None or run.mode != Run.Mode.ECONOMY:
        return None
    every = list(Batch.objects.filter(run=run).order_by("pk"))
    shown = [batch for batch in every if batch.step != Batch.Step.COLLECTED] or every
    if not shown:
        return None
    sent = [batch.submitted_at for batch in shown if batch.submitted_at is not None]
    reasons = [batch.message for batch in shown if batch.step in UNSENT and batch.message]
    return RunBatches(
        count=len(shown),
        words=run_progress_words(shown),
        submitted_at=min(sent) if sent else None,
        open=shown[0].step != Batch.Step.COLLECTED,
        waiting=tuple(dict.fromkeys(reasons)),
    )


def run_progress_words(shown: list[Batch]) -> str:
    """Return the header's words for several batches of a run, together: the least advanced
    one's status, with completed and total summed over them ("in progress 10 of 24",
    "validating · 10 of 24 done", "expired: 20 of 24 came back"); one batch's own words
    for one."""
    if len(shown) == 1:
        return progress_words(shown[0])
    completed = sum(batch.completed for batch in shown)
    total = sum(batch.total for batch in shown)
    least = min(shown, key=_advance)
    if least.step == Batch.Step.COLLECTED:  # all of them are over
        short = [batch for batch in shown if batch.status in ("expired", "cancelled")]
        if short:
            return f"{short[0].status}: {completed} of {total} came back"
        return progress_words(next((b for b in shown if b.status != "completed"), least))
    if least.step == Batch.Step.SUBMITTED and least.status == "in_progress":
        return f"in progress {completed} of {total}"
    words = progress_words(least)
    return f"{words} · {completed} of {total} done" if completed else words


def status_of(batch: Batch | None) -> dict | None:
    """Return `generation_status --json`'s "batch" for a run's latest batch. The contract
    (DESIGN.md, "Third wave") names one batch with its service id, so a run split into
    several reports its latest there; the review header shows them together (of_run)."""
    if batch is None:
        return None
    return {
        "id": batch.batch_id or None,
        "status": batch.status or batch.step,
        "completed": batch.completed,
        "total": batch.total,
    }
