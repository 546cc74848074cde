"""The spend ledger: every call the studio paid for, or most likely paid for, entered once.

Budgets and every spend figure read these entries, never the attempt rows (which go with
their page), so deleting an illustrated page never refunds what it cost.
"""

from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Sum

from .clock import db_now
from .models import SpendEntry
from .pricing import amount as stored_amount


def enter(
    *,
    attempt_id: int,
    amount: Decimal | None,
    basis: str,
    confirmed: bool,
    project_id: int | None,
    run_id: int | None,
    kind: str,
    account: str,
    provider: str,
    model: str,
    day=None,
) -> None:
    """Enter one call's charge. A call already entered as unconfirmed (its worker was
    thought lost) is confirmed in place when its answer does arrive; it is never entered
    twice. Calls that cost nothing are not entered."""
    if not amount:
        return
    fields = {
        "amount": amount,
        "basis": basis,
        "confirmed": confirmed,
        "project_id": project_id,
        "run_id": run_id,
        "kind": kind,
        "account": account[:200],
        "provider": provider[:40],
        "model": model[:80],
    }
    try:
        with transaction.atomic():
            SpendEntry.objects.create(attempt_id=attempt_id, day=day or db_now().date(), **fields)
    except IntegrityError:
        if confirmed:
            SpendEntry.objects.filter(attempt_id=attempt_id, confirmed=False).update(**fields)


def spent(**filters) -> Decimal:
    """Return the sum of the ledger's entries that match, e.g. spent(project_id=7)."""
    total = SpendEntry.objects.filter(**filters).aggregate(total=Sum("amount"))["total"]
    return stored_amount(total)
