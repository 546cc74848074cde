"""Provider accounts: what belongs to the account behind an API key, not to a run.

Credits, the key itself, an outage and a Retry-After cool-down are facts about the
account (the provider, its endpoint and a fingerprint of its key), shared by every worker
and every project that calls through it. When one call learns that the account is out of
credits, refused, misconfigured or down, no further call starts for any project on it;
one Resume (or, for an outage, a successful probe) continues them all.
"""

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db.models import F, Q
from django.db.models.functions import Now

from .models import ProviderAccount, later

logger = logging.getLogger(__name__)

State = ProviderAccount.State
Reason = ProviderAccount.Reason
# A worker may wait this long for a cool-down to end; longer, it gives the job back to the
# queue with its next-try time and takes other work.
WAIT_IN_WORKER = 10.0
FIRST_PROBE = 30.0


@dataclass(frozen=True)
class Admission:
    """Whether a call may start on the account now."""

    verdict: str  # "go", "probe" (the one call trying a downed account), "wait", "halted"
    wait: float = 0.0
    failures_in_row: int = 0  # the outage count: a success resets it when it is not 0
    reason: str = ""
    message: str = ""


GO = Admission("go")


def ensure(key: str, *, provider: str = "", endpoint: str = "") -> None:
    ProviderAccount.objects.bulk_create(
        [ProviderAccount(key=key, provider=provider or key, endpoint=endpoint)],
        ignore_conflicts=True,
    )


def admit(key: str, *, worker_id: str) -> Admission:
    """Return whether this worker may call the account now (one query when all is well)."""
    row = (
        ProviderAccount.objects.filter(key=key)
        .values("state", "reason", "message", "cooldown_until", "failures_in_row")
        .annotate(now=Now())
        .first()
    )
    if row is None:
        return GO
    failures = row["failures_in_row"]
    if row["state"] == State.PROBING:
        won = ProviderAccount.objects.filter(key=key, state=State.PROBING, probe_by="").update(
            probe_by=worker_id, probe_started_at=Now(), updated_at=Now()
        )
        if won:
            return Admission("probe", failures_in_row=failures)
    if row["state"] in (State.HALTED, State.PROBING):
        return Admission("halted", reason=row["reason"], message=row["message"])
    until, now = row["cooldown_until"], row["now"]  # both from the database's clock
    if until is not None and until > now:
        return Admission("wait", wait=(until - now).total_seconds(), failures_in_row=failures)
    return Admission("go", failures_in_row=failures)


def cool_down(key: str, seconds: float, reason: str, *, provider: str = "", endpoint: str = ""):
    """Make every worker wait `seconds` before calling the account again (Retry-After)."""
    ensure(key, provider=provider, endpoint=endpoint)
    until = later(seconds)
    ProviderAccount.objects.filter(key=key).filter(
        Q(cooldown_until__isnull=True) | Q(cooldown_until__lt=until)
    ).update(cooldown_until=until, cooldown_reason=reason[:300], updated_at=Now())


def count_failure(key: str, *, provider: str = "", endpoint: str = "") -> int:
    """Count one more transient failure in a row on the account; return the count."""
    ensure(key, provider=provider, endpoint=endpoint)
    ProviderAccount.objects.filter(key=key).update(failures_in_row=F("failures_in_row") + 1)
    return ProviderAccount.objects.filter(key=key).values_list("failures_in_row", flat=True)[0]


def succeeded(key: str) -> None:
    """A success anywhere on the account resets its outage count (the engine calls it when
    the count was above zero as its call was admitted)."""
    ProviderAccount.objects.filter(key=key, failures_in_row__gt=0).update(failures_in_row=0)


def halt(
    key: str,
    *,
    reason: str,
    message: str,
    provider: str = "",
    endpoint: str = "",
    call_started=None,
) -> bool:
    """Halt the account. Return whether this call halted it (it was not halted already for
    the same reason, nor set going again after `call_started`, the database time at which
    the failed call started: an editor who pressed Resume while it was coming back has
    answered it already)."""
    ensure(key, provider=provider, endpoint=endpoint)
    fields = {
        "state": State.HALTED,
        "reason": reason,
        "message": message,
        "halted_at": Now(),
        "probe_by": "",
        "probe_started_at": None,
        "updated_at": Now(),
    }
    if reason == Reason.OUTAGE:
        fields.update(next_probe_at=later(FIRST_PROBE), probes=0)
    else:
        fields.update(next_probe_at=None)
    rows = ProviderAccount.objects.filter(key=key)
    if call_started is not None:
        rows = rows.filter(Q(resumed_at__isnull=True) | Q(resumed_at__lte=call_started))
    halted = rows.exclude(state=State.HALTED, reason=reason).update(**fields)
    if halted:
        logger.warning("Provider account %s halted (%s): %s", key, reason, message)
    return bool(halted)


def probe_interval(probes: int) -> float:
    """Seconds before the next probe after `probes` failed ones: 30 s, 1, 2, 4, 8, then
    every STUDIO_OUTAGE_PROBE_MAX (15 min by default)."""
    return min(FIRST_PROBE * 2**probes, float(settings.STUDIO_OUTAGE_PROBE_MAX))


def probe_failed(key: str, message: str) -> None:
    """The probe found the service still down: halted again, the next probe later."""
    account = ProviderAccount.objects.filter(key=key).values("probes").first()
    probes = (account or {"probes": 0})["probes"] + 1
    ProviderAccount.objects.filter(key=key).update(
        state=State.HALTED,
        reason=Reason.OUTAGE,
        message=message,
        probes=probes,
        next_probe_at=later(probe_interval(probes)),
        probe_by="",
        probe_started_at=None,
        updated_at=Now(),
    )


def clear(key: str) -> bool:
    """Set a halted account ok again. Return whether it was halted."""
    return bool(
        ProviderAccount.objects.filter(key=key, state__in=(State.HALTED, State.PROBING)).update(
            state=State.OK,
            reason="",
            message="",
            failures_in_row=0,
            next_probe_at=None,
            probes=0,
            probe_by="",
            probe_started_at=None,
            halted_at=None,
            resumed_at=Now(),
            updated_at=Now(),
        )
    )


def state_of(key: str) -> dict:
    """Return the account's state for pages and commands: {"state": "ok" | "cooling" |
    "halted", "reason", "message", "until" (cool-down end or next probe)}."""
    row = (
        ProviderAccount.objects.filter(key=key)
        .annotate(cooling=Q(cooldown_until__gt=Now()))
        .values(
            "state",
            "reason",
            "message",
            "cooldown_until",
            "cooldown_reason",
            "cooling",
            "next_probe_at",
        )
        .first()
    )
    if row is None:
        return {"state": "ok", "reason": "", "message": "", "until": None}
    if row["state"] in (State.HALTED, State.PROBING):
        return {
            "state": "halted",
            "reason": row["reason"],
            "message": row["message"],
            "until": row["next_probe_at"],
        }
    if row["cooling"]:
        return {
            "state": "cooling",
            "reason": row["cooldown_reason"],
            "message": "",
            "until": row["cooldown_until"],
        }
    return {"state": "ok", "reason": "", "message": "", "until": None}
