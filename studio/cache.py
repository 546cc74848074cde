"""The studio's caches: Django's, made cheap enough for the review page's polls (hundreds a
second, two or three cache calls each).

RedisCache: Django's builds a new redis.Redis for every call, and building them cost more
than the calls. A redis.Redis is safe to share: it takes a connection from its pool per
command.

FileCache: Django's lists its whole directory on every set, to see whether it is full.
Each version of a drawing project leaves a header and a poll answer behind, so the
directory holds thousands of files and a poll's two sets cost 10-36 ms. Here a set culls
at most every CULL_SECONDS (in each process), and a cull first removes what has expired,
so the directory stays near the entries still alive.

FailSoftRedisCache: the web host cut off from Redis still answers. Everything the studio
caches is also in the database (sessions are cached_db; a poll's shared answer is made
again from the database), so a read that cannot reach Redis is a miss, a write is
dropped and an add succeeds, with a warning. Once a call has failed, the process skips Redis for
DOWN_SECONDS (misses at once, no waiting on the timeout for every call), then tries
again. A delete is not dropped: the value would come back with Redis (a signed-out
session signed in again), so it raises, and the page says Redis is unreachable
(studio.middleware.RedisUnreachableMiddleware).
"""

import logging
import time

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient as DjangoRedisCacheClient
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

# What "Redis cannot be reached" raises (refused, reset, timed out, name not found): not a
# Redis that answers with an error, which is a bug to see.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError)


class RedisCacheClient(DjangoRedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class RedisCache(DjangoRedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = RedisCacheClient


class RedisUnavailable(Exception):
    """A cache delete could not reach Redis (or Redis was marked down a moment ago)."""


class FailSoftRedisCache(RedisCache):
    """RedisCache whose reads miss and writes are dropped while Redis cannot be reached.

    Give it short socket timeouts in OPTIONS (socket_connect_timeout, socket_timeout: the
    settings do) so that finding out costs a fraction of a second, not a hung request."""

    DOWN_SECONDS = 5.0

    def __init__(self, server, params):
        super().__init__(server, params)
        self._down_until = 0.0

    def _attempt(self, method, fallback, *args, **kwargs):
        if time.monotonic() < self._down_until:
            return fallback
        try:
            return method(*args, **kwargs)
        except UNREACHABLE as error:
            self._mark_down(error)
            return fallback

    def _mark_down(self, error: Exception) -> None:
        self._down_until = time.monotonic() + self.DOWN_SECONDS
        logger.warning(
            "Redis is unreachable (%s: %s); the cache misses for %.0f s",
            type(error).__name__,
            error,
            self.DOWN_SECONDS,
        )

    def get(self, key, default=None, version=None):
        return self._attempt(super().get, default, key, default, version)

    def get_many(self, keys, version=None):
        return self._attempt(super().get_many, {}, keys, version)

    def has_key(self, key, version=None):
        return self._attempt(super().has_key, False, key, version)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        self._attempt(super().set, None, key, value, timeout, version)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        # True, as for a key no one holds: the caller goes on as if alone. The poll's
        # "who makes the shared answer" turn then falls to every poll, each answering from
        # the database; False would answer every poll "nothing new" while Redis is away.
        return self._attempt(super().add, True, key, value, timeout, version)

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        return self._attempt(super().set_many, list(data), data, timeout, version)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return self._attempt(super().touch, False, key, timeout, version)

    def _strict(self, method, *args):
        if time.monotonic() < self._down_until:
            raise RedisUnavailable("Redis was unreachable a moment ago")
        try:
            return method(*args)
        except UNREACHABLE as error:
            self._mark_down(error)
            raise RedisUnavailable(f"{type(error).__name__}: {error}") from error

    def delete(self, key, version=None):
        return self._strict(super().delete, key, version)

    def delete_many(self, keys, version=None):
        return self._strict(super().delete_many, keys, version)

    def clear(self):
        return self._strict(super().clear)


class FileCache(FileBasedCache):
    CULL_SECONDS = 5.0

    def __init__(self, dir, params):
        super().__init__(dir, params)
        self._cull_due = 0.0

    def _cull(self):
        now = time.monotonic()
        if now < self._cull_due:
            return
        self._cull_due = now + self.CULL_SECONDS
        for name in self._list_cache_files():
            try:
                with open(name, "rb") as file:
                    self._is_expired(file)  # removes it when expired
            except FileNotFoundError:
                pass  # another web worker removed it meanwhile
        super()._cull()
