"""One clock for every process on every machine: the database's.

Leases, slots, cool-downs, the rate bucket, next-try times, the sweep and the review
page's poll cursor are compared across processes, so their times come from the database
(`Now()` in an UPDATE, or db_now() when Python needs the value), never from the clock of
whichever machine a worker or web server happens to run on.
"""

import time
from datetime import UTC, datetime

from django.db import connection

_QUERIES = {
    # clock_timestamp(), not now(): now() is the start of the transaction.
    "postgresql": "SELECT clock_timestamp()",
    "sqlite": "SELECT STRFTIME('%Y-%m-%d %H:%M:%f', 'now')",
}


def db_now() -> datetime:
    """Return the database's current time (aware, UTC)."""
    with connection.cursor() as cursor:
        cursor.execute(_QUERIES.get(connection.vendor, "SELECT CURRENT_TIMESTAMP"))
        value = cursor.fetchone()[0]
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


class DatabaseClock:
    """What the engine reads the time from and sleeps with (tests inject another)."""

    def now(self) -> datetime:
        return db_now()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
