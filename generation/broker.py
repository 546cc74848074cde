"""Handing many tasks to django-q2's broker in one go.

django-q2 pushes each task as it is made: one Redis round trip, or one INSERT with the ORM
broker. Queuing a 2,000-page book made 2,000 of them, about half of its second. Here
async_task still builds and signs every task, and the signed packages are pushed together
(a Redis RPUSH or a bulk INSERT per thousand) for the two brokers the studio runs on; any
other broker gets them one by one, as django-q2 would."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.brokers.orm import ORM
from django_q.brokers.redis_broker import Redis
from django_q.conf import Conf
from django_q.models import OrmQ
from redis import Redis as RedisClient
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# What a broker (or any Redis client) raises when Redis cannot be reached: refused, reset,
# timed out. Not an error Redis answers with, which is a bug to see.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError)

CHUNK = 1000  # packages per push: one Redis command or one INSERT stays a modest size


class PackageBatch:
    """Stands in for the broker in async_task(broker=…): keeps each signed package."""

    def __init__(self, broker: Broker):
        self.broker = broker
        self.list_key = broker.list_key  # async_task logs it
        self.packages: list[str] = []

    def enqueue(self, package: str) -> int:
        self.packages.append(package)
        return len(self.packages)


@contextmanager
def batched(broker: Broker | None = None) -> Iterator[PackageBatch]:
    """Yield a stand-in broker for async_task; on leaving, push what it was handed. Nothing
    is pushed if the block raises."""
    batch = PackageBatch(broker or get_broker())
    yield batch
    push(batch.broker, batch.packages)


def push(broker: Broker, packages: list[str]) -> None:
    """Put signed task packages on the broker's queue, in order."""
    for start in range(0, len(packages), CHUNK):
        chunk = packages[start : start + CHUNK]
        if isinstance(broker, Redis):
            broker.connection.rpush(broker.list_key, *chunk)
        elif isinstance(broker, ORM):
            # As ORM.enqueue: available at once (a lock in the past is no lock).
            now = timezone.now()
            key = broker.list_key or Conf.CLUSTER_NAME
            broker.get_connection().bulk_create(
                OrmQ(key=key, payload=package, lock=now) for package in chunk
            )
        else:
            for package in chunk:
                broker.enqueue(package)


@dataclass(frozen=True)
class RedisState:
    """What the operations page says of Redis: reachable with its round trip, or why not."""

    reachable: bool
    latency_ms: float | None = None
    reason: str = ""


def redis_state() -> RedisState | None:
    """PING the studio's Redis (REDIS_URL) on a connection of its own, with the settings'
    short timeouts, so a Redis that cannot be reached costs the page at most about a
    second. None when the studio runs without Redis."""
    if not settings.REDIS_URL:
        return None
    client = RedisClient.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
        socket_timeout=settings.REDIS_CACHE_READ_TIMEOUT,
    )
    try:
        started = time.perf_counter()
        client.ping()
        return RedisState(True, latency_ms=(time.perf_counter() - started) * 1000)
    except UNREACHABLE as error:
        return RedisState(False, reason=f"{type(error).__name__}: {error}")
    finally:
        client.close()
