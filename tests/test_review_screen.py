"""The review page's filters and the book preview, as an editor's browser receives them."""

import re

import pytest
from django.urls import reverse

from generation import services
from generation.models import Illustration, Run

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


@pytest.fixture
def signed_in(client, editor):
    client.force_login(editor)
    return client


def chips(html: str) -> dict[str, str]:
    """Return {filter key: "Label count"} of the review page's filter chips."""
    found = re.findall(
        r'data-filter="(\w+)"[^>]*>([^<]+)<span class="filter-chip__count">(\d+)</span>', html
    )
    return {key: f"{label.strip()} {count}" for key, label, count in found}


def card_filters(html: str) -> dict[str, str]:
    """Return {page number: its card's data-filters}."""
    cards = re.findall(r'<article id="page-\d+" class="[^"]+" data-filters="([^"]*)"[^>]*>', html)
    numbers = re.findall(r"<span>Page (\d+)", html)
    return dict(zip(numbers, cards, strict=True))


def hidden_cards(html: str) -> int:
    return len(re.findall(r'<article id="page-\d+"[^>]* hidden[ >]', html))


@pytest.fixture
def mixed_book(make_project, openai_settings, fake_openai, drain):
    """Four pages: 1 rejected by the service, 2 drawn then its prompt changed (out of date),
    3 drawn, 4 never sent."""
    project = make_project(pages=4, title="Mixed Book")
    fake_openai.rules.append(("meadow number 1.", "400_policy"))
    pages = {page.number: page for page in project.pages.all()}
    for number in (1, 2, 3):
        services.queue_page(page=pages[number])
    drain(services.generate_missing(project=project).run.pk, limit=3)
    pages[2].prompt = "The fox asleep under a hedge."
    pages[2].save()
    return project


def test_the_filter_chips_count_the_cards_each_shows(signed_in, mixed_book):
    html = signed_in.get(reverse("project-detail", args=[mixed_book.pk])).content.decode()
    assert chips(html) == {
        "all": "All 4",
        "attention": "Needs attention 1",
        "outdated": "Out of date 1",
        "unapproved": "Not approved 4",
    }
    assert card_filters(html) == {
        "1": "all attention unapproved",
        "2": "all outdated unapproved",
        "3": "all unapproved",
        "4": "all unapproved",
    }
    assert hidden_cards(html) == 0


def test_not_approved_counts_every_page_whose_picture_is_not_approved(signed_in, mixed_book):
    page = mixed_book.pages.get(number=3)
    services.approve_page(page=page)
    url = reverse("project-detail", args=[mixed_book.pk])
    html = signed_in.get(url).content.decode()
    assert chips(html)["unapproved"] == "Not approved 3"
    html = signed_in.get(url, {"show": "unapproved"}).content.decode()
    assert hidden_cards(html) == 1


def test_a_filter_in_the_address_hides_the_other_cards_without_javascript(signed_in, mixed_book):
    url = reverse("project-detail", args=[mixed_book.pk])
    html = signed_in.get(url, {"show": "attention"}).content.decode()
    assert hidden_cards(html) == 3
    assert 'data-show="attention"' in html
    assert re.search(r'data-filter="attention" aria-current="true"', html)


def test_an_unknown_filter_is_refused_with_the_ones_there_are(signed_in, mixed_book):
    response = signed_in.get(reverse("project-detail", args=[mixed_book.pk]), {"show": "bogus"})
    assert response.status_code == 400
    assert response.content.decode() == "show must be one of all, attention, outdated, unapproved"


def test_pages_held_by_a_halted_run_need_attention(
    signed_in, make_project, openai_settings, fake_openai, drain
):
    project = make_project(pages=3)
    fake_openai.script.append("429_quota")
    run = services.generate_missing(project=project).run
    drain(run.pk, limit=1)
    assert Run.objects.get(pk=run.pk).state == Run.State.HALTED
    html = signed_in.get(reverse("project-detail", args=[project.pk])).content.decode()
    assert chips(html)["attention"] == "Needs attention 3"
    # The poll sends the cards with the same keys, for the browser to count again.
    poll = signed_in.get(reverse("project-poll", args=[project.pk]), {"since": "0"}, headers=HTMX)
    assert set(card_filters(poll.content.decode()).values()) == {"all attention unapproved"}


# --- the book preview ------------------------------------------------------------------------


@pytest.fixture
def half_drawn(make_project, drain):
    """Three pages: page 1 drawn, pages 2 and 3 on their way (queued)."""
    project = make_project(pages=3, title="Half Drawn")
    run = services.generate_missing(project=project).run
    drain(run.pk, limit=1)
    return project


def book(client, project, **params):
    return client.get(reverse("project-book", args=[project.pk]), params)


def test_the_book_preview_shows_a_spread_of_two_pages_as_they_print(signed_in, half_drawn):
    half_drawn.trim = "a4"  # a tall trim: each page its picture above its text
    half_drawn.save()
    drawn = Illustration.objects.get(page__number=1, status=Illustration.Status.COMPLETE)
    html = book(signed_in, half_drawn, spread=2).content.decode()
    assert "Spread 2 of 3 · pages 1–2" in html  # page 1 of the book faces page 2
    assert html.count('<figure class="sheet') == 2
    assert f'xlink:href="{reverse("illustration-image", args=[drawn.pk])}"' in html
    assert ">Page 1: the fox crosses meadow number 1.</text>" in html
    assert html.count(" sheet--missing") == 1
    assert "No illustration yet: it is on its way" in html
    assert 'rel="next" data-book-turn="next" href="?spread=3&amp;trim=a4"' in html
    assert 'rel="prev" data-book-turn="prev" href="?spread=1&amp;trim=a4"' in html


def test_the_first_spread_is_the_title_page_alone_on_the_right(signed_in, half_drawn):
    html = book(signed_in, half_drawn).content.decode()
    assert "Spread 1 of 5 · title page" in html  # 8.5 × 8.5 in: a spread for each page
    assert '<div class="sheet sheet--absent" aria-hidden="true"></div>' in html
    assert 'class="sheet sheet--right sheet--title"' in html
    assert 'rel="prev"' not in html


def test_the_last_spread_of_a_printed_book_ends_on_a_left_hand_page(signed_in, half_drawn):
    html = book(signed_in, half_drawn, spread=5).content.decode()
    assert "Spread 5 of 5 · blank page" in html
    assert 'class="sheet sheet--left sheet--blank"' in html
    assert 'rel="next"' not in html


def test_the_book_preview_prints_at_the_projects_trim_unless_asked(signed_in, half_drawn):
    assert (
        'aria-current="true">8.5 × 8.5 in <span class="muted">(this book)</span>'
        in book(signed_in, half_drawn).content.decode()
    )
    html = book(signed_in, half_drawn, trim="8x10").content.decode()
    assert 'aria-current="true">8 × 10 in</a>' in html
    assert "this book is set to another trim" in html


def test_the_book_preview_refuses_spreads_and_trims_it_does_not_have(signed_in, half_drawn):
    for params, reason in [
        ({"spread": "6"}, "spread must be a number from 1 to 5"),
        ({"spread": "0"}, "spread must be a number from 1 to 5"),
        ({"spread": "two"}, "spread must be a whole number"),
        (
            {"trim": "a3"},
            "trim must be one of 8.5x8.5, 8x10, 8.5x11, 8.25x8.25, a4, or a "
            "custom size in inches written WxH (e.g. 7x9), each side from 4 to 14 in.",
        ),
    ]:
        response = book(signed_in, half_drawn, **params)
        assert (response.status_code, response.content.decode()) == (400, reason)


def test_the_book_preview_is_the_owners_alone(client, half_drawn, other_editor):
    url = reverse("project-book", args=[half_drawn.pk])
    assert client.get(url).status_code == 302  # to sign in
    client.force_login(other_editor)
    assert client.get(url).status_code == 404


def test_the_review_and_export_pages_lead_to_the_book_preview(signed_in, half_drawn):
    url = reverse("project-book", args=[half_drawn.pk])
    for page in ("project-detail", "project-export"):
        html = signed_in.get(reverse(page, args=[half_drawn.pk])).content.decode()
        assert f'href="{url}"' in html


def test_an_empty_book_has_one_spread_that_says_so(signed_in, make_project):
    html = book(signed_in, make_project(pages=0)).content.decode()
    assert "Spread 1 of 1 · title page" in html
    assert "This book has no pages yet." in html


def test_pages_of_a_running_project_whose_service_account_halted_need_attention(
    signed_in, make_project, openai_settings, fake_openai, drain
):
    halted = make_project(pages=1, title="First")
    fake_openai.script.append("429_quota")
    drain(services.generate_missing(project=halted).run.pk)
    waiting = make_project(pages=2, title="Second")
    run = services.generate_missing(project=waiting).run
    html = signed_in.get(reverse("project-detail", args=[waiting.pk])).content.decode()
    assert Run.objects.get(pk=run.pk).state == Run.State.RUNNING
    assert "Generation halted." in html  # the account's halt, on this project's banner
    assert chips(html)["attention"] == "Needs attention 2"
    # Held for the account's reason, in words short enough for the chip's one line.
    assert len(re.findall(r"</span>\s*Held: out of credits</span>", html)) == 2


def test_every_page_links_the_studios_favicon(signed_in):
    from django.contrib.staticfiles import finders

    html = signed_in.get(reverse("project-list")).content.decode()
    link = re.search(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', html)
    assert link is not None and link.group(1).endswith("/studio/favicon.svg")
    with open(finders.find("studio/favicon.svg")) as icon:
        assert icon.read().startswith("<svg")
