"""Big books: the review page shows a window of a book's cards at a time, with a navigator;
sections, filters and the poll still work across windows."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models.functions import Now
from django.urls import reverse
from django.utils import timezone

from generation import services
from generation.models import Illustration
from studio.models import Page
from studio.review import WINDOW

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


@pytest.fixture
def signed_in(client, editor):
    client.force_login(editor)
    return client


def page_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<article id="page-(\d+)"', html)]


def review(client, project, **query):
    return client.get(reverse("project-detail", args=[project.pk]), query)


def test_a_book_of_the_window_size_is_one_plain_grid(signed_in, make_project):
    project = make_project(pages=WINDOW)
    html = review(signed_in, project).content.decode()
    assert len(page_ids(html)) == WINDOW
    assert "window-nav" not in html


def test_a_big_book_shows_one_window_and_a_navigator(signed_in, make_project):
    project = make_project(pages=2 * WINDOW + 50)
    ids = list(project.pages.order_by("number").values_list("pk", flat=True))
    html = review(signed_in, project).content.decode()
    assert page_ids(html) == ids[:WINDOW]
    assert f"Showing pages 1–{WINDOW} of {2 * WINDOW + 50}" in html
    links = re.findall(r'class="window-nav__link[^"]*" href="\?start=(\d+)"', html)
    assert links == ["0", str(WINDOW), str(2 * WINDOW)]
    assert f'aria-current="page">1–{WINDOW}</a>' in html

    second = review(signed_in, project, start=WINDOW).content.decode()
    assert page_ids(second) == ids[WINDOW : 2 * WINDOW]
    last = review(signed_in, project, start=10_000).content.decode()  # past the end
    assert page_ids(last) == ids[2 * WINDOW :]
    between = review(signed_in, project, start=WINDOW + 7).content.decode()  # snapped
    assert page_ids(between) == ids[WINDOW : 2 * WINDOW]


def test_a_bad_start_is_refused_with_the_reason(signed_in, make_project):
    project = make_project(pages=WINDOW + 1)
    for bad in ("x", "-1"):
        response = review(signed_in, project, start=bad)
        assert response.status_code == 400
        assert b"start must be a whole number of pages" in response.content


def test_the_filter_counts_of_a_big_book_count_the_whole_book(signed_in, make_project, drain):
    project = make_project(pages=WINDOW + 20)
    drain(services.generate_missing(project=project).run.pk, limit=30)
    html = review(signed_in, project).content.decode()
    counts = dict(
        re.findall(r'data-filter="(\w+)"[^>]*>[^<]*<span class="filter-chip__count">(\d+)', html)
    )
    assert counts == {
        "all": str(WINDOW + 20),
        "attention": "0",
        "outdated": "0",
        "unapproved": str(WINDOW + 20),
    }
    assert "data-windowed" in html  # the browser keeps these counts instead of recounting


def test_sections_work_across_windows(signed_in, make_project):
    project = make_project(pages=2 * WINDOW + 10)
    middle = WINDOW + WINDOW // 2  # Part Two starts halfway through the second window
    Page.objects.filter(project=project, number__lte=middle).update(section="Part One")
    Page.objects.filter(project=project, number__gt=middle).update(section="Part Two")
    html = review(signed_in, project).content.decode()
    sections = re.findall(r'href="\?start=(\d+)#section-(\d+)">([^<]+)</a>', html)
    assert sections == [("0", "1", "Part One"), (str(WINDOW), "2", "Part Two")]

    # The second window opens inside Part One and shows its heading, then Part Two's.
    second = review(signed_in, project, start=WINDOW).content.decode()
    heads = re.findall(r'<header id="section-(\d+)" class="section-head"', second)
    assert heads == ["1", "2"]
    third = review(signed_in, project, start=2 * WINDOW).content.decode()
    assert re.findall(r'<header id="section-(\d+)" class="section-head"', third) == ["2"]


def test_the_poll_of_a_window_answers_only_its_cards_and_the_whole_books_counts(
    signed_in, make_project, drain
):
    project = make_project(pages=2 * WINDOW)
    run = services.generate_missing(project=project).run
    a_minute_ago = timezone.now() - timedelta(minutes=1)  # queued well before the tab opened
    Illustration.objects.filter(run=run).update(updated_at=a_minute_ago)
    Page.objects.filter(project=project).update(updated_at=a_minute_ago)
    ids = list(project.pages.order_by("number").values_list("pk", flat=True))
    html = review(signed_in, project, start=WINDOW).content.decode()
    url = re.search(r'data-poll hx-get="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert f"start={WINDOW}" in url
    drain(run.pk, limit=5)  # pages 1-5 of the first window
    Illustration.objects.filter(page_id=ids[-1]).update(status="generating", updated_at=Now())
    body = signed_in.get(url, headers=HTMX).content.decode()
    assert page_ids(body) == [ids[-1]]
    assert 'id="filter-bar"' in body and 'hx-swap-oob="innerHTML"' in body
    assert f"5 of {2 * WINDOW} illustrated" in body


def test_generate_missing_queues_a_2000_page_book(
    make_project, broker, django_capture_on_commit_callbacks
):
    project = make_project(pages=2000)
    with django_capture_on_commit_callbacks(execute=True):
        result = services.generate_missing(project=project)
    assert result.count == 2000
    assert Illustration.objects.filter(page__project=project, status="queued").count() == 2000
    assert broker.queue_size() == 2000  # a task per job, pushed a thousand at a time


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="JIT is PostgreSQL's; set DATABASE_URL to run this"
)
def test_postgresql_compiles_none_of_the_studios_queries():
    """A big book's page counts passed PostgreSQL's JIT threshold, and compiling them cost
    three times the query: the studio's connections turn JIT off."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW jit")
        assert cursor.fetchone() == ("off",)
