"""The web host cut off from Redis still answers: pages load, polls answer from the
database, new work waits in the database for the broker, and the operations page says
Redis is unreachable.

Redis here is a server that accepts connections and never answers (what a cut link looks
like to a client whose SYN got through) or a closed port. Without the settings' socket
timeouts a client waits on the silent one forever, so these tests would hang, not fail
slowly. They run on any database and broker: the cache, the broker and REDIS_URL are
pointed at the dead Redis for the test.
"""

import json
import re
import socket

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.urls import reverse
from django_q.brokers import get_broker
from django_q.conf import Conf

from generation import services
from generation.clock import db_now
from generation.models import Illustration
from studio.models import Project
from studio.settings import _with_timeouts as with_timeouts

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


@pytest.fixture
def silent_redis():
    """A TCP server that takes connections (the kernel completes them) and never reads."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    server.close()


@pytest.fixture
def closed_port():
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now: connections are refused
    return f"redis://127.0.0.1:{port}/0"


class CutOff:
    """Redis as the web host sees it with its link cut; mend() gives the broker back."""

    def __init__(self, broker):
        self.broker = broker  # the broker of the test's own settings, for after
        self.saved = (Conf.ORM, Conf.REDIS)

    def mend(self) -> None:
        Conf.ORM, Conf.REDIS = self.saved


@pytest.fixture
def redis_cut_off(broker, settings, silent_redis, closed_port):
    """Point the cache and REDIS_URL at the silent Redis and the broker at a closed port, as
    the studio's settings would configure them (studio.settings: the same timeouts)."""
    settings.CACHES = {
        **settings.CACHES,
        "default": {
            "BACKEND": "studio.cache.FailSoftRedisCache",
            "LOCATION": silent_redis,
            "OPTIONS": {
                "socket_connect_timeout": settings.REDIS_CONNECT_TIMEOUT,
                "socket_timeout": settings.REDIS_CACHE_READ_TIMEOUT,
            },
        },
    }
    settings.SESSION_ENGINE = "studio.cached_db"
    settings.REDIS_URL = silent_redis
    cut = CutOff(broker)
    Conf.ORM = None
    Conf.REDIS = with_timeouts(closed_port, settings.REDIS_BROKER_READ_TIMEOUT)
    yield cut
    cut.mend()


@pytest.fixture
def signed_in(client, editor):
    client.force_login(editor)
    return client


def poll_url(html: str) -> str:
    return re.search(r'data-poll hx-get="([^"]+)"', html).group(1).replace("&amp;", "&")


def toast(response) -> dict:
    return json.loads(response["HX-Trigger"])["toast"]


def test_every_redis_client_of_the_studio_gives_up_within_its_timeouts(redis_cut_off):
    pool = cache._cache.get_client().connection_pool
    assert pool.connection_kwargs["socket_connect_timeout"] == settings.REDIS_CONNECT_TIMEOUT
    assert pool.connection_kwargs["socket_timeout"] == settings.REDIS_CACHE_READ_TIMEOUT
    assert settings.REDIS_CACHE_READ_TIMEOUT <= 1 and settings.REDIS_CONNECT_TIMEOUT <= 1
    broker_pool = get_broker().connection.connection_pool
    assert broker_pool.connection_kwargs["socket_connect_timeout"] == 0.5
    # A worker's BLPOP waits 1 s for a task: the broker's read timeout outlasts it.
    assert broker_pool.connection_kwargs["socket_timeout"] == settings.REDIS_BROKER_READ_TIMEOUT
    assert 1 < settings.REDIS_BROKER_READ_TIMEOUT <= 5


def test_the_cache_misses_and_drops_writes_while_redis_is_silent_and_deletes_refuse(
    redis_cut_off, caplog
):
    from studio.cache import RedisUnavailable

    cache.set("greeting", "hello")  # dropped, after one read timeout
    assert cache.get("greeting", "missed") == "missed"
    assert cache.get_many(["greeting"]) == {}
    assert cache.add("turn", True) is True  # the caller goes on as if alone
    assert "Redis is unreachable (TimeoutError" in caplog.text
    with pytest.raises(RedisUnavailable):
        cache.delete("greeting")


def test_the_review_page_and_its_poll_answer_from_the_database(redis_cut_off, signed_in, editor):
    project = Project.objects.create(owner=editor, title="Cut Off Book")
    first = project.pages.create(number=1, text="The fox reads a page without Redis.")
    page = signed_in.get(reverse("project-detail", args=[project.pk]))
    assert page.status_code == 200
    assert "Cut Off Book" in page.content.decode()
    assert Session.objects.count() == 1  # the session lives on in the database

    services.generate_missing(project=project)  # the project moves on: the tab is behind
    poll = signed_in.get(poll_url(page.content.decode()), headers=HTMX)
    assert poll.status_code == 200  # not 204 "nothing new": the poll made its own answer
    body = poll.content.decode()
    # A card is named by its page's id (1 only in a fresh database).
    assert "· 1 queued" in body
    assert f'<article id="page-{first.pk}" class="card card--queued"' in body
    version = Project.objects.values_list("version", flat=True).get(pk=project.pk)
    assert f"v={version}" in poll_url(poll.content.decode())


@pytest.mark.django_db(transaction=True)  # the broker is handed its tasks on commit
def test_work_started_without_the_broker_waits_in_the_database_and_is_handed_over_later(
    redis_cut_off, signed_in, editor
):
    project = Project.objects.create(owner=editor, title="Patient Book")
    for number in (1, 2, 3):
        project.pages.create(number=number, text=f"Page {number}.")
    response = signed_in.post(reverse("project-generate", args=[project.pk]), headers=HTMX)
    assert response.status_code == 200
    assert toast(response) == {
        "level": "warning",
        "message": "Queued 3 illustrations. The work queue (Redis) cannot be reached right "
        "now: the pictures wait and start by themselves when it is back.",
    }
    jobs = Illustration.objects.filter(page__project=project)
    assert list(jobs.values_list("status", flat=True)) == ["queued"] * 3

    redis_cut_off.mend()  # the broker answers again; the sweep tops it up
    broker = redis_cut_off.broker
    assert services.top_up_broker(now=db_now()) == 3
    assert broker.queue_size() == 3


def test_the_operations_page_says_redis_is_unreachable(redis_cut_off, client, django_user_model):
    operator = django_user_model.objects.create_superuser("operator", "op@example.com", "pw")
    client.force_login(operator)
    response = client.get(reverse("operations"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Redis is unreachable: TimeoutError: Timeout reading from" in body
    assert "Worker clusters cannot be seen while Redis is unreachable" in body


def test_the_operations_page_gives_a_reachable_redis_its_round_trip(
    settings, client, django_user_model
):
    if not settings.REDIS_URL:
        pytest.skip("needs Redis (CI's second pass): the studio runs without it here")
    operator = django_user_model.objects.create_superuser("operator", "op@example.com", "pw")
    client.force_login(operator)
    body = client.get(reverse("operations")).content.decode()
    assert re.search(r"Redis is reachable \(\d+\.\d ms\)", body)


def test_signing_out_while_redis_is_unreachable_says_so_and_signs_out_nothing_halfway(
    redis_cut_off, signed_in
):
    response = signed_in.post(reverse("logout"))
    assert response.status_code == 503
    assert "Redis cannot be reached right now" in response.content.decode()
    # Neither copy went: the database's row stays, so the cached one cannot come back
    # alone, and the editor is told to try again.
    assert Session.objects.count() == 1


def test_metrics_answer_without_the_clusters_gauge_while_redis_is_unreachable(
    redis_cut_off, client, settings, make_project
):
    settings.STUDIO_METRICS_TOKEN = "s3cret-metrics-token"
    make_project(pages=2)
    response = client.get(
        reverse("metrics"), headers={"Authorization": "Bearer s3cret-metrics-token"}
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "studio_stale_jobs 0.0" in body  # what the database knows is still reported
    # The clusters' heartbeats live in Redis: no number rather than a false 0.
    assert "studio_worker_clusters_alive" not in body
    assert "studio_broker_reachable 0.0" in body
