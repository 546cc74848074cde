"""Workers on hosts of their own: each worker cluster in a network namespace with its own
address, reaching PostgreSQL, Redis and the image service only over its link
(tests/netns.py); and a web host whose way to Redis is cut. Needs root, `ip netns`,
PostgreSQL and Redis (CI's second pass): a SQLite file would be reached without any
network, so cutting a link would prove nothing.
"""

import json
import re
import subprocess
import sys
from collections import Counter

import pytest
import requests
from django.conf import settings
from django.db import connection
from django.urls import reverse

from generation import selectors, services
from generation.clock import db_now
from generation.models import GenerationAttempt, Illustration
from studio.models import Project
from tests import netns
from tests.conftest import (
    ARTIFACTS,
    ROOT,
    _database_url,
    openai_env,
    stop_process_group,
    wait_until,
    worker_env,
)

pytestmark = pytest.mark.django_db(transaction=True)


def why_not() -> str:
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        return "needs PostgreSQL and Redis (a SQLite file is reached without a network)"
    return netns.unavailable()


@pytest.fixture
def network():
    reason = why_not()
    if reason:
        pytest.skip(reason)
    network = netns.Network()
    yield network
    network.remove()


def address(relay: netns.Relay) -> str:
    return f"{relay.address[0]}:{relay.address[1]}"


@pytest.fixture
def worker_host(network, fake_openai, broker, request):
    """Start a worker cluster on a new host whose database, Redis and image service are
    reached through its link only; return the host."""
    started = []
    ARTIFACTS.mkdir(exist_ok=True)

    def start(label: str, **overrides) -> netns.Host:
        host = network.host(label)
        db_port = int(connection.settings_dict["PORT"] or 5432)
        db = host.relay("database", db_port)
        redis_port = int(settings.REDIS_URL.rsplit(":", 1)[1].split("/", 1)[0])
        redis = host.relay("redis", redis_port)
        service_port = int(fake_openai.origin.rsplit(":", 1)[1])
        service = host.relay("service", service_port)
        service_url = fake_openai.url.replace(fake_openai.origin, f"http://{address(service)}")
        env = worker_env(
            **openai_env(fake_openai, OPENAI_BASE_URL=service_url, **overrides),
            DATABASE_URL=_database_url().replace(
                f"@{connection.settings_dict['HOST'] or '127.0.0.1'}:{db_port}/",
                f"@{address(db)}/",
            ),
            REDIS_URL=settings.REDIS_URL.replace(f"127.0.0.1:{redis_port}", address(redis)),
        )
        log = open(ARTIFACTS / f"host-{request.node.name}-{label}.log", "w")
        process = subprocess.Popen(
            host.command(sys.executable, "manage.py", "qcluster"),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(process)
        host.process = process
        return host

    yield start
    for process in started:
        stop_process_group(process)


def test_two_worker_hosts_draw_one_book_every_page_complete_none_paid_twice(
    worker_host, fake_openai, make_project
):
    hosts = [worker_host("w1"), worker_host("w2")]
    # Both clusters are up once each has reached Redis (the broker) over its link.
    wait_until(lambda: all(h.relays["redis"].connections for h in hosts), timeout=60)
    fake_openai.latency = 0.3  # long enough that every worker of both hosts gets pages
    project = make_project(pages=16)
    services.generate_missing(project=project)

    jobs = Illustration.objects.filter(page__project=project)
    wait_until(lambda: jobs.filter(status="complete").count() == 16, timeout=120)

    assert sorted(jobs.filter(status="complete").values_list("page__number", flat=True)) == list(
        range(1, 17)
    )
    attempts = GenerationAttempt.objects.filter(illustration__page__project=project)
    assert Counter(attempts.values_list("illustration__page__number", flat=True)) == {
        n: 1 for n in range(1, 17)
    }
    assert fake_openai.call_count == 16
    # Each host's calls went out over its own link.
    assert all(h.relays["service"].connections > 0 for h in hosts)


# Beats every second, so a lease runs out after 3 s of silence; calls may take a minute.
CUT_ENV = {"STUDIO_HEARTBEAT_SECONDS": "1", "STUDIO_PROVIDER_TIMEOUT": "60"}


def test_a_worker_host_cut_off_past_its_lease_is_taken_over_and_changes_nothing_once_back(
    worker_host, fake_openai, make_project
):
    first = worker_host("w1", **CUT_ENV)
    wait_until(lambda: first.relays["redis"].connections, timeout=60)
    fake_openai.hold()
    project = make_project(pages=4)
    services.generate_missing(project=project)
    wait_until(lambda: fake_openai.in_flight == 4, timeout=60)  # every page in w1's calls
    second = worker_host("w2", **CUT_ENV)
    wait_until(lambda: second.relays["redis"].connections, timeout=60)

    first.cut()  # w1 loses the database, Redis and the service with its calls in flight
    # w2's sweep finds w1's leases run out, and w2 calls for those pages anew.
    wait_until(lambda: fake_openai.in_flight == 8, timeout=60)
    fake_openai.release()  # w1's answers wait at the link's far end
    jobs = Illustration.objects.filter(page__project=project)
    wait_until(lambda: jobs.filter(status="complete").count() == 4, timeout=60)
    taken_over = snapshot(project)
    unknown = selectors.ledger_summary(project.pk)["unconfirmed_calls"]

    first.mend()
    stop_process_group(first.process)  # w1 finishes what it had in hand, then stops

    # Paid calls per kept picture stay within what the journal reported as unknown: w1's
    # four calls, charged by the service, their answers never heard while it was cut off.
    kept = jobs.filter(status="complete").count()
    assert (fake_openai.successes, kept, unknown) == (8, 4, 4)
    assert fake_openai.successes <= kept + unknown
    # Back, w1 changes no job: its claims were gone (compare-and-set), so its pictures are
    # kept nowhere and w2's stay. Its one write is the truth about its own calls: the
    # journal's rows for them, "lost" with the list price, now say what the service
    # answered and charged, each still entered once in the ledger.
    jobs_after, attempts_after = snapshot(project)
    jobs_before, attempts_before = taken_over
    assert jobs_after == jobs_before
    assert [row[0] for row in attempts_after] == [row[0] for row in attempts_before]
    changed = [(a, b) for a, b in zip(attempts_before, attempts_after, strict=True) if a != b]
    assert len(changed) == 4
    assert all(a[1] == "lost" and b[1] == "success" for a, b in changed)
    ledger = selectors.ledger_summary(project.pk)
    assert (ledger["paid_calls"], ledger["unconfirmed_calls"]) == (8, 0)


def snapshot(project) -> tuple:
    """Return what the database holds of a project's work: its jobs and its journal."""
    jobs = Illustration.objects.filter(page__project=project).order_by("pk")
    attempts = GenerationAttempt.objects.filter(illustration__page__project=project)
    return (
        list(jobs.values_list("pk", "status", "image")),
        list(attempts.order_by("pk").values_list("pk", "outcome", "cost")),
    )


# --- the web host cut off from Redis --------------------------------------------------------

WEB_PORT = 8000  # inside the web host's namespace, whose ports are its own


@pytest.fixture
def web_host(network, broker, request):
    """Start the studio's web server on a host of its own that reaches the database and
    Redis over its link, Redis on an address of its own (so it can be cut alone); return
    the host, with its base URL."""
    host = network.host("web")
    db_port = int(connection.settings_dict["PORT"] or 5432)
    db = host.relay("database", db_port)
    redis_port = int(settings.REDIS_URL.rsplit(":", 1)[1].split("/", 1)[0])
    redis = host.relay("redis", redis_port, own_address=host.spare_address(3))
    env = worker_env(
        DATABASE_URL=_database_url().replace(
            f"@{connection.settings_dict['HOST'] or '127.0.0.1'}:{db_port}/", f"@{address(db)}/"
        ),
        REDIS_URL=settings.REDIS_URL.replace(f"127.0.0.1:{redis_port}", address(redis)),
        DJANGO_ALLOWED_HOSTS=host.inside,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / f"host-{request.node.name}-web.log", "w")
    listen = f"{host.inside}:{WEB_PORT}"
    process = subprocess.Popen(
        host.command(sys.executable, "manage.py", "runserver", "--noreload", listen),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    host.url = f"http://{listen}"

    def answers() -> bool:
        try:
            return requests.get(host.url + reverse("login"), timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(answers, timeout=60, message="the web host's server did not start")
    yield host
    stop_process_group(process)


def poll_url(html: str) -> str:
    return re.search(r'data-poll hx-get="([^"]+)"', html).group(1).replace("&amp;", "&")


def test_the_web_host_cut_off_from_redis_serves_pages_and_polls_and_says_redis_is_unreachable(
    web_host, client, django_user_model
):
    editor = django_user_model.objects.create_superuser("editor", "ed@example.com", "ed-pass")
    project = Project.objects.create(owner=editor, title="A Book Far Away")
    for number in (1, 2, 3):
        project.pages.create(number=number, text=f"Page {number}: the fox crosses a network.")
    client.force_login(editor)  # a session in the database (and in Redis, cached)
    browser = requests.Session()
    browser.cookies.set("sessionid", client.cookies[settings.SESSION_COOKIE_NAME].value)
    review = web_host.url + reverse("project-detail", args=[project.pk])
    operations = web_host.url + reverse("operations")

    before = browser.get(operations, timeout=30)
    assert before.status_code == 200 and "Redis is reachable (" in before.text
    page = browser.get(review, timeout=30)
    assert page.status_code == 200 and "A Book Far Away" in page.text

    web_host.cut_relay("redis")  # the web host's packets to Redis go nowhere; the DB's go on

    # The editor starts the book: the jobs are kept, and the toast says they wait.
    started = browser.post(
        web_host.url + reverse("project-generate", args=[project.pk]),
        headers={"HX-Request": "true", "X-CSRFToken": browser.cookies["csrftoken"]},
        timeout=30,
    )
    assert started.status_code == 200
    toast = json.loads(started.headers["HX-Trigger"])["toast"]
    assert toast["level"] == "warning"
    assert "The work queue (Redis) cannot be reached right now" in toast["message"]
    jobs = Illustration.objects.filter(page__project=project)
    assert list(jobs.values_list("status", flat=True)) == ["queued"] * 3

    # The open tab's poll answers from the database with the change.
    poll = browser.get(
        web_host.url + poll_url(page.text), headers={"HX-Request": "true"}, timeout=30
    )
    assert poll.status_code == 200
    assert "· 3 queued" in poll.text and poll.text.count('class="card card--queued"') == 3
    again = browser.get(review, timeout=30)
    assert again.status_code == 200 and "A Book Far Away" in again.text

    cut_off = browser.get(operations, timeout=30)
    assert cut_off.status_code == 200
    assert re.search(r"Redis is unreachable: (Timeout|Connection)Error", cut_off.text)
    assert web_host.relays["redis"].connections > 0  # it did reach Redis before the cut

    web_host.mend_relay("redis")
    back = browser.get(operations, timeout=30)
    assert "Redis is reachable (" in back.text
    # The sweep hands the waiting jobs to the broker.
    assert services.top_up_broker(now=db_now()) == 3
