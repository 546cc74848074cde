"""The session engine: Django's cached_db, except that a delete leaves the cache first.

Django's deletes the database row, then the cached copy. With Redis unreachable the second
step fails after the first has happened, and once Redis is back its copy would sign the
session in again (cached_db reads the cache before the database). Here the cached copy
goes first: when Redis cannot be reached, nothing is deleted and the sign-out answers
503 (studio.middleware.RedisUnreachableMiddleware), to be tried again.

A new key (cycle_key: signing in, a password change) goes on without Redis: the old key's
cached copy holds what the session held before, either no one signed in or a password
hash that no longer matches, which Django's own check refuses.
"""

import logging

from django.contrib.sessions.backends import cached_db
from django.contrib.sessions.backends.db import SessionStore as DBStore

from studio.cache import RedisUnavailable

logger = logging.getLogger(__name__)


class SessionStore(cached_db.SessionStore):
    _cycling = False

    def cycle_key(self):
        self._cycling = True
        try:
            super().cycle_key()
        finally:
            self._cycling = False

    def delete(self, session_key=None):
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        try:
            self._cache.delete(self.cache_key_prefix + session_key)
        except RedisUnavailable:
            if not self._cycling:
                raise
            logger.warning("The old session key's cached copy stays: Redis is unreachable")
        DBStore.delete(self, session_key)
