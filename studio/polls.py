"""What keeps the review page's polls cheap: every open tab asks every 2 s while work is on
its way (an idle book's tab backs off to every 10 s), hundreds at once on a busy studio, so
the poll answers most of them without counting a single page.

- A tab that already shows the project's current version gets 204 after one indexed
  query (`polled_project`), unless the moment it was told to ask again by has come (a
  worker's lease runs out then, which changes a card though no row changes: the query
  reads the database's clock too).
- While a run draws, the version moves several times between two polls of a tab, so
  almost every poll is a changed one. The tabs share answers (`SharedAnswers`): the latest
  one serves every tab it is news to, and a new one is made at most once a second.
"""

import enum
import functools
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.utils.crypto import constant_time_compare

from .models import Project

# A shared answer is made at most once in this many seconds (by the cache's own clock, so
# web servers whose clocks differ agree on it): a tab sees the project at most that much
# later than it could.
SHARED_POLL_SECONDS = 1
# How far back a shared answer looks for changed cards: a tab's 2 s between polls, the
# answer's second, a slow answer, and the cursor's own margin. A tab whose cursor is older
# than that gets an answer of its own.
SHARED_POLL_WINDOW = timedelta(seconds=6)
# How long the latest answer, or a header computed for one version, is kept for the tabs
# to which it is still news.
KEEP_SECONDS = 10


@dataclass(frozen=True)
class Polled:
    """The polled project as the quiet poll knows it: enough to answer 204 or a shared
    answer without loading the project."""

    pk: int
    version: int
    created: str  # the project's creation time, as the database gave it: tells apart a
    # project of a reused id
    clock: object = None  # the database's clock, as it gave it (read only when needed)

    def now(self) -> datetime:
        """Return the database's clock when the project was read (aware, UTC)."""
        value = self.clock
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    def reached(self, due: float | None) -> bool:
        """Return whether the moment `due` (a timestamp the tab was given) has come."""
        return due is not None and self.now().timestamp() >= due


def polled_project(request: HttpRequest, pk: int) -> Polled | None:
    """Return the polled project if the session's user is its owner, in one indexed query
    (plus the session's own lookup), checked as login_required and the session's auth hash
    would check them. None for anything else (no session, another owner, a rotated secret
    key): the caller then takes Django's own path.

    The query is written out once (`_poll_sql`): at hundreds of polls a second, building
    it with the ORM cost more than the rest of the answer."""
    user_id = request.session.get(SESSION_KEY)
    session_hash = request.session.get(HASH_SESSION_KEY)
    if user_id is None or not session_hash:
        return None
    with connection.cursor() as cursor:
        cursor.execute(_poll_sql(), [pk, user_id])
        row = cursor.fetchone()
    if row is None:
        return None
    version, created, password, clock = row
    # The session stays valid only while the password it signed in with does (Django's
    # own check in get_user()).
    owner = get_user_model()(password=password)
    if not constant_time_compare(session_hash, owner.get_session_auth_hash()):
        return None
    return Polled(pk=pk, version=version, created=str(created), clock=clock)


# The database's clock in a SELECT (generation.clock's, as a column).
_NOW = {
    "postgresql": "clock_timestamp()",
    "sqlite": "STRFTIME('%Y-%m-%d %H:%M:%f', 'now')",
}


@functools.cache
def _poll_sql() -> str:
    """SELECT version, created_at, owner's password, the database's clock FROM the project
    joined to its active owner, by the project's id and the owner's."""
    q = connection.ops.quote_name
    project, user = Project._meta, get_user_model()._meta
    owner = project.get_field("owner").column
    now = _NOW.get(connection.vendor, "CURRENT_TIMESTAMP").replace("%", "%%")
    return (
        f"SELECT p.{q(project.get_field('version').column)}, "
        f"p.{q(project.get_field('created_at').column)}, "
        f"u.{q(user.get_field('password').column)}, {now} "
        f"FROM {q(project.db_table)} p "
        f"JOIN {q(user.db_table)} u ON u.{q(user.pk.column)} = p.{q(owner)} "
        f"WHERE p.{q(project.pk.column)} = %s AND p.{q(owner)} = %s "
        f"AND u.{q(user.get_field('is_active').column)}"
    )


@dataclass(frozen=True)
class SharedAnswer:
    version: int  # of the project, read before the answer was made
    since: datetime  # it holds every card changed at or after this
    status: int
    content: bytes
    made: datetime | None = None  # the database's clock its header was read at


class Turn(enum.Enum):
    """What a poll does when no shared answer is news to it."""

    MAKE = "make"  # make the next shared answer: this web worker took the turn
    OWN = "own"  # the tab's cursor is older than shared answers reach: an answer of its own
    LATER = "later"  # one is being made, or was made within the last second and the tab
    # has it: nothing now (204), ask again at the next poll


class SharedAnswers:
    """The latest answer to the tabs of one browser polling one view of a project.

    Only tabs of one browser share: the header's forms carry a CSRF token of that
    browser's secret, which another browser of the same editor (a phone beside a laptop)
    would have refused. Everything else a poll asks besides its cursor and version (the
    run it saw, whether it shows cards, its window of a big book) is part of the key."""

    def __init__(self, request: HttpRequest, polled: Polled, csrf_secret: str):
        asked = [polled.created, csrf_secret, request.headers.get("HX-Current-URL", "")]
        shown = ("since", "v", "due")  # where the tab stands, not what it asks for
        asked += sorted(f"{k}={v}" for k, v in request.GET.items() if k not in shown)
        digest = hashlib.sha256("\n".join(asked).encode()).hexdigest()
        self.key = f"studio:poll:{polled.pk}:{digest}"

    def news(
        self, *, shown: int, since: datetime, due: float | None = None
    ) -> "SharedAnswer | Turn":
        """Return the latest answer if it is news to a tab showing version `shown` with
        this cursor and no new one is due, or what the tab's poll should do instead. `due`:
        the moment the tab was told to ask again by, when it has come (an answer made
        since then, even at the same version, is news to it).

        A new answer is due when none was begun within the last second; the one web worker
        that takes the turn makes it, while the others serve the latest (or, to a tab it
        is no news to, "ask again at your next poll")."""
        making = f"{self.key}:making"
        found = cache.get_many([self.key, making])  # one round trip to Redis
        latest = found.get(self.key)
        if latest is not None and latest.since > since:
            return Turn.OWN
        if making not in found and cache.add(making, True, SHARED_POLL_SECONDS):
            return Turn.MAKE
        if latest is not None and latest.version > shown:
            return latest
        if latest is not None and due is not None and latest.version == shown:
            if latest.made is not None and latest.made.timestamp() >= due:
                return latest
        return Turn.LATER

    def keep(
        self, *, version: int, since: datetime, response: HttpResponse, made: datetime
    ) -> None:
        """Keep an answer made at `version` from cursor `since` by the database's clock
        `made`, unless a newer one is kept already (two web workers may finish out of
        order)."""
        latest = cache.get(self.key)
        if latest is None or (latest.version, latest.made or made) <= (version, made):
            answer = SharedAnswer(version, since, response.status_code, response.content, made)
            cache.set(self.key, answer, KEEP_SECONDS)
