import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import caches
from django.db import connection
from django_q.brokers import get_broker

from generation import engine, selectors
from generation.clock import db_now
from generation.models import GenerationAttempt, SpendEntry
from studio.models import Page, Project

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


def wait_until(condition, *, timeout: float, interval: float = 0.1, message: str = ""):
    """Poll condition() until it is truthy; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(message or f"condition not met within {timeout} s")


S3 = os.environ.get("STUDIO_TEST_S3") == "1"


def charges_and_entries(fake, project) -> tuple[Counter, Counter]:
    """Return the idempotency keys of the calls the fake service charged (answered 200)
    and of the project's ledger entries, each with how often it came: equal when every
    charge is in the ledger once. Call it once the service has no call in flight."""
    charged = Counter(c["idempotency_key"] for c in fake.calls if c.get("status") == 200)
    entered = Counter(
        GenerationAttempt.objects.filter(
            pk__in=SpendEntry.objects.filter(project_id=project.pk).values("attempt_id")
        ).values_list("idempotency_key", flat=True)
    )
    return charged, entered


def pytest_generate_tests(metafunc):
    """With STUDIO_TEST_S3=1, every test marked `storage` runs twice: on the filesystem as
    always, and against the S3 server (tests/s3.py) through django-storages and boto3."""
    if S3 and metafunc.definition.get_closest_marker("storage"):
        if "media_storage" not in metafunc.fixturenames:
            metafunc.fixturenames.append("media_storage")
        metafunc.parametrize("media_storage", ["filesystem", "s3"], indirect=True)


_buckets = itertools.count(1)


@pytest.fixture
def media_storage(request, settings):
    """The test's storage: the configured one, or (param "s3") a bucket of its own on the S3
    server, for this process and the workers and servers it starts (worker_env)."""
    if getattr(request, "param", "filesystem") != "s3":
        return None
    return use_bucket(settings)


def use_bucket(settings, *, endpoint: str = "") -> str:
    """Make a new bucket on the S3 server and store this test's files in it, through
    `endpoint` (the server's own address unless given: a proxy in front of it). Return its
    name."""
    from tests import s3

    server = os.environ["STUDIO_TEST_S3_URL"]
    session = os.environ.get("STUDIO_TEST_SESSION") or "main"
    bucket = f"studio-{session}-{os.getpid()}-{next(_buckets)}".lower()
    s3.client(server).create_bucket(Bucket=bucket)
    entry = s3.storage_options(bucket, endpoint or server)
    settings.STORAGES = {**settings.STORAGES, "default": entry}
    return bucket


def stored_names(media) -> list[str]:
    """Return the names of every stored file, as the storage itself lists them: the files
    under `media` on disk, or the objects of the test's bucket (asked with boto3, not
    through the studio's code)."""
    entry = settings.STORAGES["default"]
    if entry["BACKEND"] != "storages.backends.s3.S3Storage":
        return sorted(str(p.relative_to(media)) for p in Path(media).rglob("*") if p.is_file())
    from tests import s3

    listed = s3.client(os.environ["STUDIO_TEST_S3_URL"]).get_paginator("list_objects_v2")
    pages = listed.paginate(Bucket=entry["OPTIONS"]["bucket_name"])
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def pytest_collection_modifyitems(config, items):
    """The longest tests (marked `long`) first: with sessions side by side (make
    test), one of them starts on these while the other works through the rest, instead of
    one session finishing a long test alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


class Sweeper:
    """Run the sweep each call; truthy once the sweeps have put back `expected` jobs in all
    (leases expire one by one, so one sweep may put back some and the next the rest)."""

    def __init__(self, expected: int):
        self.expected = expected
        self.requeued = 0

    def __call__(self) -> bool:
        from generation import services

        self.requeued += services.sweep()["requeued"]
        return self.requeued >= self.expected


@pytest.fixture(scope="session", autouse=True)
def prepared_queries(django_db_setup, django_db_blocker):
    """The queries the studio builds once per database (selectors.prepare_queries), built
    before any test counts a request's queries."""
    with django_db_blocker.unblock():
        # A run whose tests need no database (one provider's file) has none set up.
        if "studio_page" in connection.introspection.table_names():
            selectors.prepare_queries()


@pytest.fixture
def editor(django_user_model):
    return django_user_model.objects.create_user(username="alice", password="alice-password")


@pytest.fixture
def other_editor(django_user_model):
    return django_user_model.objects.create_user(username="charlie", password="charlie-password")


@pytest.fixture
def make_project(editor):
    def make(*, pages: int = 24, owner=None, title: str = "A Book", style_guide: str = ""):
        project = Project.objects.create(
            owner=owner or editor, title=title, style_guide=style_guide
        )
        Page.objects.bulk_create(
            Page(project=project, number=n, text=f"Page {n}: the fox crosses meadow number {n}.")
            for n in range(1, pages + 1)
        )
        return project

    return make


class FakeClock:
    """The database's clock, whose sleep() moves time on at once: waits are counted, never
    slept."""

    def __init__(self):
        self.offset = timedelta(0)
        self.slept: list[float] = []

    def now(self):
        return db_now() + self.offset

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def drain(clock):
    """Work a run's queue in this process, one job after another, recording waits."""

    def run(run_id: int, *, waits: list | None = None, limit: int = 1000, kind="illustration"):
        sleep = waits.append if waits is not None else (lambda seconds: None)
        done = 0
        while (
            done < limit and engine.run_next_job(run_id, kind, sleep=sleep, clock=clock) is not None
        ):
            done += 1
        return done

    return run


def forget_clusters() -> None:
    """Drop the worker clusters' heartbeats: the database cache holding them is no model's
    table, so no flush empties it, and a cluster a test killed would look alive to the
    next test for up to a minute. On Redis they are the broker's own keys."""
    caches["cluster-stats"].clear()
    broker = get_broker()
    if hasattr(broker, "connection") and hasattr(broker.connection, "keys"):
        from django_q.conf import Conf

        stale = broker.connection.keys(f"{Conf.Q_STAT}:*")
        if stale:
            broker.connection.delete(*stale)


@pytest.fixture
def broker():
    """The configured broker (ORM, or Redis when REDIS_URL is set), emptied around a test,
    with no cluster heartbeat left from another test."""
    broker = get_broker()
    broker.purge_queue()
    forget_clusters()
    yield broker
    broker.purge_queue()
    forget_clusters()


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def worker_env(**overrides) -> dict[str, str]:
    """Environment for a subprocess that must share this test's database and broker."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=_database_url(),
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
        STUDIO_QUEUE_NAME=settings.Q_CLUSTER["name"],
        STUDIO_BACKOFF_BASE="0",
        PYTHONUNBUFFERED="1",
    )
    storage = settings.STORAGES["default"]
    if storage["BACKEND"] == "storages.backends.s3.S3Storage":  # a test's own bucket
        env.update(
            STUDIO_MEDIA_STORAGE="s3",
            STUDIO_S3_BUCKET=storage["OPTIONS"]["bucket_name"],
            STUDIO_S3_ENDPOINT_URL=storage["OPTIONS"]["endpoint_url"],
            STUDIO_S3_REGION=storage["OPTIONS"]["region_name"],
        )
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def stop_process_group(process: subprocess.Popen, *, timeout: float = 15) -> None:
    """Stop a qcluster the way it stops cleanly: SIGINT to its whole process group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def qcluster(transactional_db, broker, request):
    """Start real `manage.py qcluster` processes on the test database; stop them after."""
    processes: list[subprocess.Popen] = []
    ARTIFACTS.mkdir(exist_ok=True)

    def start(**env) -> subprocess.Popen:
        log = open(ARTIFACTS / f"qcluster-{request.node.name}-{len(processes)}.log", "w")
        process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=worker_env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        stop_process_group(process)


TEST_API_KEY = "sk-test-0123456789abcdefSECRET"
# The OpenAI model most tests speak to: the fake reports gpt-image-1's usage, and 1024x1024
# is a size it takes (the suite draws offline pictures at 256x256).
OPENAI_TEST_MODEL = "gpt-image-1"
OPENAI_TEST_SIZE = "1024x1024"


@pytest.fixture
def fake_openai():
    from generation.fakes.openai import FakeImageService

    service = FakeImageService().start()
    yield service
    service.stop()


@pytest.fixture
def openai_settings(settings, fake_openai):
    """Point this process's engine at the fake service."""
    settings.STUDIO_IMAGE_PROVIDER = "openai"
    settings.STUDIO_TEXT_PROVIDER = "openai"
    settings.OPENAI_BASE_URL = fake_openai.url
    settings.OPENAI_API_KEY = TEST_API_KEY
    settings.STUDIO_PROVIDER_TIMEOUT = 2.0
    # The model whose usage the fake reports, at a size it takes (tests/test_gpt_image_2.py
    # speaks to the default, gpt-image-2).
    settings.STUDIO_IMAGE_MODEL = OPENAI_TEST_MODEL
    settings.STUDIO_IMAGE_SIZE = OPENAI_TEST_SIZE
    return settings


def openai_env(fake, **overrides) -> dict:
    """Worker environment that points a qcluster at the fake service."""
    return {
        "STUDIO_IMAGE_PROVIDER": "openai",
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_API_KEY": TEST_API_KEY,
        "STUDIO_PROVIDER_TIMEOUT": "5",
        "STUDIO_IMAGE_MODEL": OPENAI_TEST_MODEL,
        "STUDIO_IMAGE_SIZE": OPENAI_TEST_SIZE,
        **overrides,
    }


@pytest.fixture
def fake_predictions():
    from generation.fakes.replicate import FakePredictionService

    service = FakePredictionService().start()
    yield service
    service.stop()


@pytest.fixture
def replicate_settings(settings, fake_predictions):
    settings.STUDIO_CLIP_PROVIDER = "replicate"
    settings.REPLICATE_BASE_URL = fake_predictions.url
    settings.REPLICATE_API_TOKEN = "r8_test_token"
    settings.STUDIO_REPLICATE_IMAGE_MODEL = "black-forest-labs/flux-schnell"
    return settings


def replicate_env(fake, **overrides) -> dict:
    return {
        "STUDIO_CLIP_PROVIDER": "replicate",
        "REPLICATE_BASE_URL": fake.url,
        "REPLICATE_API_TOKEN": "r8_test_token",
        **overrides,
    }


@pytest.fixture
def fake_gemini():
    from generation.fakes.gemini import FakeGemini

    service = FakeGemini().start()
    yield service
    service.stop()


GEMINI_TEST_KEY = "AIzaSyTEST-0123456789-SECRET"


@pytest.fixture
def gemini_settings(settings, fake_gemini):
    settings.GEMINI_BASE_URL = fake_gemini.url
    settings.GEMINI_API_KEY = GEMINI_TEST_KEY
    settings.STUDIO_PROVIDER_TIMEOUT = 2.0
    return settings


@pytest.fixture
def fake_chat_images():
    from generation.fakes.chat_images import FakeChatImages

    service = FakeChatImages().start()
    yield service
    service.stop()


CHAT_TEST_KEY = "sk-or-v1-test0123456789SECRET"


@pytest.fixture
def chat_image_settings(settings, fake_chat_images):
    settings.STUDIO_CHAT_IMAGE_BASE_URL = fake_chat_images.url
    settings.STUDIO_CHAT_IMAGE_API_KEY = CHAT_TEST_KEY
    settings.STUDIO_PROVIDER_TIMEOUT = 2.0
    return settings


@pytest.fixture
def replicate_image_settings(settings, fake_predictions):
    settings.REPLICATE_BASE_URL = fake_predictions.url
    settings.REPLICATE_API_TOKEN = "r8_test_token"
    settings.STUDIO_PROVIDER_TIMEOUT = 2.0
    settings.STUDIO_REPLICATE_IMAGE_MODEL = "black-forest-labs/flux-schnell"
    return settings


@pytest.fixture
def fake_fal():
    from generation.fakes.fal import FakeFal

    service = FakeFal().start()
    yield service
    service.stop()


FAL_TEST_KEY = "fal-test-key-id:0123456789SECRET"


@pytest.fixture
def fal_settings(settings, fake_fal):
    settings.FAL_QUEUE_URL = fake_fal.origin
    settings.FAL_PLATFORM_URL = fake_fal.platform_url
    settings.FAL_KEY = FAL_TEST_KEY
    settings.STUDIO_PROVIDER_TIMEOUT = 2.0
    settings.STUDIO_FAL_IMAGE_MODEL = "fal-ai/flux/schnell"
    return settings


@pytest.fixture
def edited_catalogue(tmp_path, monkeypatch):
    """Give the studio a catalogue edited for one test (edit: text -> text), read afresh."""
    from generation import catalogue

    def edit(change):
        path = tmp_path / "catalogue.toml"
        path.write_text(change(catalogue.PATH.read_text()))
        monkeypatch.setattr(catalogue, "PATH", path)
        catalogue.services.cache_clear()

    yield edit
    catalogue.services.cache_clear()
