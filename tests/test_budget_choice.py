"""Generate Missing says before starting when the estimate passes the budget, and lets the
editor choose: generate the pictures that fit, raise the budget, or cancel. Without
JavaScript (a form post and a page) and with htmx (an out-of-band region)."""

from decimal import Decimal

import pytest
from django.urls import reverse

from generation.models import Illustration, Run

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
ASKED = "24 pictures ≈ $1.01; the budget leaves $0.30: 7 pictures"


@pytest.fixture
def book(make_project, settings):
    settings.STUDIO_PRICES = {"embedded": "0.042"}
    project = make_project(pages=24)
    project.budget = Decimal("0.30")
    project.save()
    return project


@pytest.fixture
def signed_in(client, editor):
    client.force_login(editor)
    return client


def queued() -> list[int]:
    return sorted(Illustration.objects.values_list("page__number", flat=True))


def test_without_javascript_it_asks_first_then_generates_the_pictures_that_fit(signed_in, book):
    url = reverse("project-generate", args=[book.pk])

    asked = signed_in.post(url)

    html = asked.content.decode()
    assert asked.status_code == 200
    assert ASKED in html
    assert "Nothing has started." in html
    assert 'name="count" value="7"' in html and "Generate the 7 that fit" in html
    assert reverse("project-settings", args=[book.pk]) in html  # Raise the budget
    assert f'href="{book.get_absolute_url()}"' in html  # Cancel
    assert (queued(), Run.objects.count()) == ([], 0)

    done = signed_in.post(url, {"count": "7"})

    assert (done.status_code, done["Location"]) == (302, book.get_absolute_url())
    assert queued() == [1, 2, 3, 4, 5, 6, 7]  # the first seven pages, in page order


def test_with_htmx_the_choice_is_swapped_in_and_cleared_once_chosen(signed_in, book):
    url = reverse("project-generate", args=[book.pk])
    page = signed_in.get(book.get_absolute_url()).content.decode()
    assert '<div id="generate-choice" class="generate-choice"></div>' in page  # its place

    asked = signed_in.post(url, headers=HTMX).content.decode()

    assert '<div id="generate-choice" class="generate-choice" hx-swap-oob="true">' in asked
    assert ASKED in asked
    assert 'hx-post="' + url + '"' in asked
    assert queued() == []

    done = signed_in.post(url, {"count": "7"}, headers=HTMX)

    assert queued() == [1, 2, 3, 4, 5, 6, 7]
    cleared = '<div id="generate-choice" class="generate-choice" hx-swap-oob="true"></div>'
    assert cleared in done.content.decode()
    assert "Queued 7 illustrations." in done["HX-Trigger"]


def test_pictures_on_their_way_count_against_what_the_budget_leaves(signed_in, book):
    url = reverse("project-generate", args=[book.pk])
    signed_in.post(url, {"count": "3"})  # three on their way: $0.126 of the $0.30

    html = signed_in.post(url).content.decode()

    assert "21 pictures ≈ $0.88; the budget leaves $0.17 after the 3 on their way: 4 pictures" in (
        html
    )


def test_a_count_that_no_longer_fits_asks_again_and_a_bad_one_is_refused(signed_in, book):
    url = reverse("project-generate", args=[book.pk])

    again = signed_in.post(url, {"count": "8"})
    bad = [
        signed_in.post(url, {"count": value})
        for value in ("seven", "0", "-3", "1e3", "2001", "9" * 40)
    ]

    assert again.status_code == 200 and ASKED in again.content.decode()
    assert [response.status_code for response in bad] == [400] * 6
    assert {response.content.decode() for response in bad} == {
        "count must be a whole number of pictures from 1 to 2,000."
    }
    assert queued() == []


def test_within_the_budget_or_without_one_it_starts_at_once(signed_in, book):
    book.budget = Decimal("1.01")
    book.save()
    assert signed_in.post(reverse("project-generate", args=[book.pk])).status_code == 302
    assert len(queued()) == 24
