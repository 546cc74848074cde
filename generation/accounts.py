"""Provider accounts: what belongs to the account behind an API key, not to a run.

Credits, the key itself, an outage and a Retry-After cool-down are facts about the
account (the provider, its endpoint and a fingerprint of its key), shared by every worker
and every project that calls through it. When one call learns that the account is out of
credits, refused, misconfigured or down, no further call starts for any project on it;
one Resume (or, for an outage, a successful probe) continues them all.

Every change of an account's state is a transition of generation.machines.ACCOUNT. The
account's row comes last in the lock order: a change that shows on the review pages first
moves the counters of the projects it shows on (Project.objects.mark_changed_with_open_runs,
their rows in id order), then the account's row, in one transaction; never a project's row
while the account's is held.

A run's `halted_account` names what halted it, and what one Resume continues: a provider
account's key, STORAGE (the studio's storage, shared by every project), or a kind's model
on an account (config_key: a wrong model is the model's, not the key's).
"""

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Now

from studio.models import Project

from .machines import ACCOUNT
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

STORAGE = "studio:storage"


def config_key(kind: str, account: str) -> str:
    """Return the halt key of a kind's model on an account (a config failure's)."""
    return f"config:{kind}:{account}"[:200]


def _move(key: str, name: str, *, context: dict | None = None, **fields) -> int:
    return ACCOUNT.move(ProviderAccount.objects.filter(key=key), name, context=context, **fields)


def _change(key: str, name: str, *, context: dict | None = None, **fields) -> int:
    """Make a transition that shows on the review pages: the counters of every project
    with an open run move first, then the account's row, in one transaction (the lock
    order). Nothing is written when the transition cannot be made."""
    rows = ProviderAccount.objects.filter(key=key)
    if not ACCOUNT.eligible(rows, name, **(context or {})).exists():
        return 0
    with transaction.atomic():
        Project.objects.mark_changed_with_open_runs()
        return ACCOUNT.move(rows, name, context=context, **fields)


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
        won = _move(
            key,
            "take_probe",
            probe_by=worker_id,
            probe_started_at=Now(),
            updated_at=Now(),
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
    rows = ProviderAccount.objects.filter(key=key).filter(
        Q(cooldown_until__isnull=True) | Q(cooldown_until__lt=until)
    )
    if rows.exists():  # a time on an ok account, not a state: shown all the same
        with transaction.atomic():
            Project.objects.mark_changed_with_open_runs()
            rows.update(cooldown_until=until, cooldown_reason=reason[:300], updated_at=Now())


def count_failure(key: str, *, provider: str = "", endpoint: str = "") -> int:
    """Count one more transient failure in a row on the account; return the count."""
    ensure(key, provider=provider, endpoint=endpoint)
    ProviderAccount.objects.filter(key=key).update(failures_in_row=F("failures_in_row") + 1)
    return ProviderAccount.objects.filter(key=key).values_list("failures_in_row", flat=True)[0]


def succeeded(key: str, *, counted: int = 0) -> None:
    """A success anywhere on the account resets its outage count, whatever the count was
    when its call was admitted (`counted`): another call may have failed meanwhile. A read
    first when it was 0, so the usual success takes no write lock."""
    rows = ProviderAccount.objects.filter(key=key, failures_in_row__gt=0)
    if counted or rows.exists():
        rows.update(failures_in_row=0)


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
    answered it already). An outage halts only an ok account: it never replaces a halt
    that needs a person (out of credits, a refused key)."""
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
    halted = _change(
        key,
        "halt_outage" if reason == Reason.OUTAGE else "halt",
        context={"call_started": call_started, "reason": reason},
        **fields,
    )
    if halted:
        logger.warning("Provider account %s halted (%s): %s", key, reason, message)
    return bool(halted)


def probe_interval(probes: int) -> float:
    """Seconds before the next probe after `probes` failed ones: 30 s, 1, 2, 4, 8, then
    every STUDIO_OUTAGE_PROBE_MAX (15 min by default)."""
    return min(FIRST_PROBE * 2**probes, float(settings.STUDIO_OUTAGE_PROBE_MAX))


def start_probe(key: str, *, now) -> bool:
    """Let one call through an account an outage halted, its probe due. Return whether
    this call started the probe."""
    return bool(_move(key, "start_probe", context={"now": now}, probe_by="", updated_at=Now()))


def probe_failed(key: str, message: str, *, worker_id: str) -> bool:
    """The worker's probe found the service still down: halted again, the next probe
    later. Return whether it was still this worker's probe (an editor's Resume, or a halt
    that needs a person, answered it already: then nothing changes)."""
    account = ProviderAccount.objects.filter(key=key).values("probes").first()
    probes = (account or {"probes": 0})["probes"] + 1
    failed = _change(
        key,
        "probe_failed",
        context={"worker_id": worker_id},
        reason=Reason.OUTAGE,
        message=message,
        probes=probes,
        next_probe_at=later(probe_interval(probes)),
        probe_by="",
        probe_started_at=None,
        updated_at=Now(),
    )
    return bool(failed)


def probe_given_back(key: str, *, worker_id: str) -> bool:
    """The probe's call never went out (its request could not be made): it proves nothing,
    so the next probe is due at once, through another run's page."""
    return bool(
        _move(
            key,
            "probe_given_back",
            context={"worker_id": worker_id},
            next_probe_at=Now(),
            probe_by="",
            probe_started_at=None,
            updated_at=Now(),
        )
    )


def probes_lost(*, stale_before, now) -> int:
    """Probes whose worker died never report: halted again, the next probe due now."""
    return ACCOUNT.move(
        ProviderAccount.objects.all(),
        "probe_lost",
        context={"stale_before": stale_before},
        next_probe_at=now,
        probe_by="",
        probe_started_at=None,
    )


OK_AGAIN = {
    "reason": "",
    "message": "",
    "failures_in_row": 0,
    "next_probe_at": None,
    "probes": 0,
    "probe_by": "",
    "probe_started_at": None,
    "halted_at": None,
}


def probe_succeeded(key: str, *, worker_id: str) -> bool:
    """The worker's probe got an answer (a picture, or a refusal of its page): the service
    is back. Return whether it was still this worker's probe."""
    healed = _change(
        key,
        "probe_succeeded",
        context={"worker_id": worker_id},
        **OK_AGAIN,
        resumed_at=Now(),
        updated_at=Now(),
    )
    if healed:
        logger.warning("Provider account %s is back: a probe got through", key)
    return bool(healed)


def clear(key: str) -> bool:
    """Set a halted account ok again. Return whether it was halted."""
    return bool(_change(key, "resume", **OK_AGAIN, resumed_at=Now(), updated_at=Now()))


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
