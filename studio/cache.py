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
"""

import time

from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient as DjangoRedisCacheClient


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
