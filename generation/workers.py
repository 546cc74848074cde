"""Worker clusters: which django-q2 clusters are alive, read from their own heartbeats.

Every cluster's guard saves a `Stat` (its id, host, workers and status) every half second.
On Redis the broker keeps them in Redis; on the ORM broker django-q2 keeps them in a
Django cache, which must be one that every process can read: the studio gives it a table
in the database (`ClusterStatsCache`, settings.CACHES["cluster-stats"]). Pages, /healthz
and /metrics read them here, without writing anything.
"""

import time
from dataclasses import dataclass
from datetime import datetime

from django.core.cache.backends.db import DatabaseCache
from django_q.brokers import Broker, get_broker
from django_q.conf import Conf
from django_q.signing import BadSignature, SignedPackage

from .clock import db_now

# A cluster whose last heartbeat is older than this is taken for dead.
ALIVE_SECONDS = 60


class ClusterStatsCache(DatabaseCache):
    """The database cache that holds the ORM broker's cluster heartbeats.

    django-q2 saves a heartbeat every 0.5 s with a 3 s lifetime. Written to SQLite that
    would be a write transaction per cluster twice a second, competing with the workers'
    claims; so a heartbeat whose status is unchanged is written at most every
    WRITE_EVERY seconds, and each lives ALIVE_SECONDS: whoever reads it judges its age by
    the timestamp it carries. A change of status (starting, stopping, stopped) is written
    at once.
    """

    WRITE_EVERY = 5.0

    def __init__(self, table, params):
        super().__init__(table, params)
        self._written: dict[str, tuple[float, str]] = {}

    def set(self, key, value, timeout=None, version=None):
        if isinstance(value, bytes | str) and key.startswith(f"{Conf.Q_STAT}:"):
            status = _status_of(value)
            last = self._written.get(key)
            if last and last[1] == status and time.monotonic() - last[0] < self.WRITE_EVERY:
                return
            self._written[key] = (time.monotonic(), status)
            timeout = ALIVE_SECONDS
        super().set(key, value, timeout, version)


def _status_of(pack) -> str:
    try:
        return str(SignedPackage.loads(pack).status)
    except (BadSignature, Exception):  # an unreadable heartbeat is still written
        return ""


@dataclass(frozen=True)
class Cluster:
    """One worker cluster as its last heartbeat describes it."""

    id: str
    host: str
    pid: int
    status: str  # django-q2's: Starting, Idle, Working, Stopping, Stopped
    workers: int
    heartbeat_at: datetime
    age_s: float  # seconds since that heartbeat, by the database's clock

    @property
    def alive(self) -> bool:
        return self.status in (str(Conf.STARTING), str(Conf.IDLE), str(Conf.WORKING)) and (
            self.age_s < ALIVE_SECONDS
        )


def _heartbeats(broker: Broker) -> list:
    # django-q2's Stat.get_all() reads the same packages, but on a cache it also writes
    # the list of keys back on every call; a page that polls must only read.
    if type(broker).get_stats is not Broker.get_stats:  # Redis: kept by the broker itself
        return broker.get_stats(f"{Conf.Q_STAT}:*") or []
    cache = broker.get_cache()
    if cache is None:
        return []
    keys = cache.get(Conf.Q_STAT) or []
    return list(cache.get_many(keys).values()) if keys else []


def clusters(*, now: datetime | None = None) -> list[Cluster]:
    """Return every cluster with a recent heartbeat (alive or just stopped), newest first.

    The age of a heartbeat is measured from the timestamp its cluster put in it (django-q2
    stamps it with the cluster machine's clock) to the database's clock."""
    packs = _heartbeats(get_broker())
    if not packs:
        return []
    now = now or db_now()
    found = []
    for pack in packs:
        try:
            stat = SignedPackage.loads(pack)
        except BadSignature:
            continue
        found.append(
            Cluster(
                id=str(stat.cluster_id),
                host=stat.host,
                pid=stat.pid,
                status=str(stat.status),
                workers=len(stat.workers),
                heartbeat_at=stat.timestamp,
                age_s=max(0.0, (now - stat.timestamp).total_seconds()),
            )
        )
    return sorted(found, key=lambda cluster: cluster.age_s)


def alive(*, now: datetime | None = None) -> list[Cluster]:
    """Return the clusters alive now (a heartbeat younger than ALIVE_SECONDS)."""
    return [cluster for cluster in clusters(now=now) if cluster.alive]
