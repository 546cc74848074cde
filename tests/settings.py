"""Settings for the test suite: the studio's own settings with test-only defaults.

Worker subprocesses started by the tests use this module too, pointed at the test
database through DATABASE_URL.
"""

import os
import tempfile
from pathlib import Path

# The suite runs the same with or without a developer's .env: it never reads one (forced,
# for the workers the tests start too).
os.environ["STUDIO_ENV_FILE"] = ""
os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key")
os.environ.setdefault("STUDIO_IMAGE_SIZE", "256x256")
# One broker queue per test session, shared with the workers the tests start.
os.environ.setdefault("STUDIO_QUEUE_NAME", f"studio-test-{os.getpid()}")
# Sessions side by side (pytest-xdist's workers, `-n 2`) each have their own database
# (pytest-django names it), queue, media, poll cache directory and cache keys: their
# projects' ids are the same numbers, and on Redis one session's cluster would take the
# other's tasks. A worker session inherits the controller's environment, so its first
# import replaces what came from there; the processes its tests start inherit its own.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if XDIST_WORKER and os.environ.get("STUDIO_TEST_SESSION") != XDIST_WORKER:
    os.environ["STUDIO_TEST_SESSION"] = XDIST_WORKER
    os.environ["STUDIO_QUEUE_NAME"] = f"studio-test-{os.getpid()}"
    os.environ["MEDIA_ROOT"] = tempfile.mkdtemp(prefix=f"studio-media-{XDIST_WORKER}-")
    os.environ["STUDIO_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"studio-cache-{XDIST_WORKER}-")

if os.environ.get("STUDIO_TEST_S3") == "1":
    # The storage tests run a second time against a real S3 server (tests/s3.py): one for
    # the whole run, started by the first process that reads these settings; the sessions
    # and workers it starts inherit its address.
    from tests import s3

    os.environ.update({**s3.CREDENTIALS, **s3.TEST_CLIENT_ENV})
    if not os.environ.get("STUDIO_TEST_S3_URL"):
        _s3_server, os.environ["STUDIO_TEST_S3_URL"] = s3.start_server()

from studio.settings import *  # noqa: E402,F403
from studio.settings import BASE_DIR, CACHES, DATABASES  # noqa: E402

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory: worker processes must see the test database.
    (BASE_DIR / "var").mkdir(exist_ok=True)
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / "test-db.sqlite3")}

if XDIST_WORKER and "KEY_PREFIX" in CACHES["default"]:
    CACHES["default"]["KEY_PREFIX"] += f"-{XDIST_WORKER}"

MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT") or tempfile.mkdtemp(prefix="studio-media-"))
os.environ["MEDIA_ROOT"] = str(MEDIA_ROOT)
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The test client's login() authenticates without a request, which django-axes refuses;
# the sign-in throttling tests switch it back on.
AXES_ENABLED = False

if skew := os.environ.get("STUDIO_TEST_CLOCK_SKEW"):
    # A worker on a machine whose clock is off by this many seconds: everything that asks
    # Django for the time gets the skewed clock. Only the database's clock is shared.
    from datetime import timedelta

    from django.utils import timezone

    _real_now = timezone.now
    timezone.now = lambda: _real_now() + timedelta(seconds=float(skew))
