"""The spend ledger: every call the studio paid for, or most likely paid for, entered once.

Budgets and every spend figure read these entries, never the attempt rows (which go with
their page), so deleting an illustrated page never refunds what it cost.
"""

from contextlib import nullcontext
from datetime import UTC
from decimal import Decimal

from django.db import IntegrityError, connection, transaction
from django.db.models import Sum
from django.db.models.functions import Now, TruncDate

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
    # The day is the database clock's (UTC), read by the INSERT itself. Outside a
    # transaction the INSERT is one statement, atomic by itself; inside one, a savepoint
    # keeps a duplicate (a likely entry confirmed in place) from breaking the caller's
    # transaction: Django marks it for rollback on any database error inside it.
    guard = transaction.atomic if connection.in_atomic_block else nullcontext
    try:
        with guard():
            SpendEntry.objects.create(
                attempt_id=attempt_id, day=day or TruncDate(Now(), tzinfo=UTC), **fields
            )
    except IntegrityError:
        if confirmed:
            SpendEntry.objects.filter(attempt_id=attempt_id, confirmed=False).update(**fields)


def spent(**filters) -> Decimal:
    """Return the sum of the ledger's entries that match, e.g. spent(project_id=7)."""
    total = SpendEntry.objects.filter(**filters).aggregate(total=Sum("amount"))["total"]
    return stored_amount(total)
