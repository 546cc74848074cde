"""Speed and spend control shared by every worker on every machine.

Before each call a worker takes a slot through a Gate: the provider's and the project's
concurrency limits, a requests-per-minute bucket for each, and the project's budget (a
Retry-After cool-down belongs to the provider account: generation.accounts). The state
lives in the database (ProviderGate, ProviderSlot), so the limits hold across any number
of clusters; a slot has a lease, renewed while its call is in flight, so a killed
worker's slot frees itself. Every time here comes from the database's clock (generation.clock).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Sum

from studio.models import Project

from . import selectors
from .clock import DatabaseClock
from .models import ProviderGate, ProviderSlot

# How often a waiting worker looks again for a free slot.
POLL_SECONDS = 0.25
# The slot of a call no limit counts: nothing is stored for it.
UNLIMITED = ProviderSlot(provider_key="", project_id=0)


class BudgetReached(Exception):
    """The next call would take the project's spending past its budget (or, with no known
    price, might: price is None)."""

    def __init__(self, *, budget: Decimal, spent: Decimal, price: Decimal | None):
        super().__init__(f"budget {budget} reached")
        self.budget, self.spent, self.price = budget, spent, price


class LongWait(Exception):
    """A rate limit's next token is further off than a worker should sleep."""

    def __init__(self, seconds: float, why: str):
        super().__init__(why)
        self.seconds, self.why = seconds, why


@dataclass(frozen=True)
class Limit:
    key: str
    max_concurrent: int | None
    requests_per_minute: int | None


def project_spent(project_id: int) -> Decimal:
    """Return what the project's calls have cost so far, from the spend ledger."""
    return selectors.project_spent(project_id)


def provider_key(provider_name: str, model: str) -> str:
    return f"{provider_name}:{model}" if model else provider_name


class Gate:
    def __init__(
        self, *, provider: str, project: Project, price: Decimal | None, lease: float, clock=None
    ):
        self.provider = provider
        self.project = project
        self.known_price = price
        self.price = price or Decimal(0)
        self.lease = timedelta(seconds=lease)
        self.clock = clock or DatabaseClock()
        # While acquire() waits: (seconds until a slot may be free, which limit holds the
        # call back: "12 a minute"); None once it has a slot or before it waited.
        self.waiting: tuple[float, str] | None = None
        self._why = ""
        self.limits = [
            Limit(
                provider,
                settings.STUDIO_PROVIDER_MAX_CONCURRENT,
                settings.STUDIO_PROVIDER_REQUESTS_PER_MINUTE,
            ),
            Limit(f"project:{project.pk}", project.max_concurrent, project.requests_per_minute),
        ]

    @property
    def limited(self) -> bool:
        """Whether any limit or budget applies, beyond a possible cool-down."""
        return self.project.budget is not None or any(
            limit.max_concurrent or limit.requests_per_minute for limit in self.limits
        )

    def acquire(self, *, still_wanted, patience: float | None = None) -> ProviderSlot | None:
        """Wait for the limits to allow a call and return its slot, or None as soon as
        still_wanted() says the job is no longer ours. Raise BudgetReached, and LongWait
        when a rate limit's next token is further off than `patience` seconds."""
        if not self.limited:
            return UNLIMITED  # nothing to count or reserve: no query at all
        ProviderGate.objects.bulk_create(
            [ProviderGate(key=limit.key, tokens=1) for limit in self.limits],
            ignore_conflicts=True,
        )
        while True:
            granted = self._try()
            if isinstance(granted, ProviderSlot):
                self.waiting = None
                return granted
            self.waiting = (granted, self._why)
            if patience is not None and granted > patience:
                raise LongWait(granted, self._why)
            self.clock.sleep(min(granted, 1.0))
            if not still_wanted():
                return None

    def _try(self) -> ProviderSlot | float:
        """Take a slot if every limit allows it now; else return seconds to wait."""
        now = self.clock.now()
        with transaction.atomic():
            gates = {
                gate.key: gate
                for gate in ProviderGate.objects.select_for_update().filter(
                    key__in=[limit.key for limit in self.limits]
                )
            }
            active = ProviderSlot.objects.filter(expires_at__gt=now)
            provider_limit, project_limit = self.limits
            if (
                provider_limit.max_concurrent
                and active.filter(provider_key=self.provider).count()
                >= provider_limit.max_concurrent
            ):
                self._why = f"{provider_limit.max_concurrent} at a time"
                return POLL_SECONDS
            if (
                project_limit.max_concurrent
                and active.filter(project_id=self.project.pk).count()
                >= project_limit.max_concurrent
            ):
                self._why = f"{project_limit.max_concurrent} at a time for this project"
                return POLL_SECONDS
            for limit in self.limits:
                if limit.requests_per_minute:
                    wait = self._refill(gates[limit.key], limit.requests_per_minute, now)
                    if wait:
                        self._why = f"{limit.requests_per_minute} a minute" + (
                            " for this project" if limit is project_limit else ""
                        )
                        return wait
            if self.project.budget is not None and self.known_price is None:
                raise BudgetReached(
                    budget=self.project.budget,
                    spent=project_spent(self.project.pk),
                    price=None,
                )
            if self.project.budget is not None and self.price:
                reserved = active.filter(project_id=self.project.pk).aggregate(
                    total=Sum("reserved")
                )["total"] or Decimal(0)
                spent = project_spent(self.project.pk)
                if spent + reserved + self.price > self.project.budget:
                    raise BudgetReached(budget=self.project.budget, spent=spent, price=self.price)
            for limit in self.limits:
                if limit.requests_per_minute:
                    gate = gates[limit.key]
                    gate.tokens -= 1
                    gate.save(update_fields=["tokens", "refilled_at"])
            return ProviderSlot.objects.create(
                provider_key=self.provider,
                project=self.project,
                reserved=self.price,
                expires_at=now + self.lease,
            )

    @staticmethod
    def _refill(gate: ProviderGate, per_minute: int, now: datetime) -> float:
        """Refill the bucket (one call's worth at most: calls are spaced, never burst);
        return seconds until a token is there, or 0 when one is."""
        rate = per_minute / 60
        if gate.refilled_at is not None:
            elapsed = max(0.0, (now - gate.refilled_at).total_seconds())
            gate.tokens = min(1.0, gate.tokens + elapsed * rate)
        gate.refilled_at = now
        if gate.tokens >= 1:
            return 0
        gate.save(update_fields=["tokens", "refilled_at"])
        return (1 - gate.tokens) / rate

    @staticmethod
    def release(slot: ProviderSlot) -> None:
        if slot is not UNLIMITED:
            ProviderSlot.objects.filter(pk=slot.pk).delete()
