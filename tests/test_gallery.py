"""The gallery of a page over HTTP: what it shows, the walk under the review page's filter,
its plain forms that come back to it without script, and its refusals."""

import re

import pytest
from django.urls import reverse

from generation import services
from generation.models import Illustration
from studio.models import Page

pytestmark = pytest.mark.django_db

Status = Illustration.Status
HTMX = {"HX-Request": "true"}


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def book(make_project, drain):
    """A four-page book whose pages were drawn once by the offline renderer."""
    project = make_project(pages=4, title="Gallery Book")
    drain(services.generate_missing(project=project).run.pk)
    return project


@pytest.fixture
def signed_in(client, editor):
    client.force_login(editor)
    return client


def page_of(project, number: int) -> Page:
    return project.pages.get(number=number)


def gallery(client, project, number: int, *, htmx: bool = False, **query):
    url = reverse("page-gallery", args=[project.pk, page_of(project, number).pk])
    return client.get(url, query, headers=HTMX if htmx else {})


def url_of(project, number: int, query: str = "") -> str:
    url = reverse("page-gallery", args=[project.pk, page_of(project, number).pk])
    return f"{url}?{query}" if query else url


def step(html: str, which: str) -> str:
    found = re.search(rf'href="([^"]+)" data-gallery-step="{which}"', html)
    return found.group(1).replace("&amp;", "&") if found else ""


def redraw(page, drain) -> None:
    drain(services.queue_page(page=page, regenerate=True).run.pk)


def test_a_page_of_its_own_shows_the_picture_text_state_and_plain_controls(signed_in, book):
    response = gallery(signed_in, book, 2)

    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" in html  # a page of its own: what a picture's link opens without script
    assert 'Page 2 <span class="gallery__of">of 4</span>' in html
    assert "Page 2: the fox crosses meadow number 2." in html
    assert 'data-announce="Page 2 of 4, not approved"' in html
    picture = page_of(book, 2).illustrations.get(status=Status.COMPLETE)
    assert html.count('class="gallery__image"') == 1
    assert f'src="/images/{picture.pk}/"' in html
    assert step(html, "previous") == url_of(book, 1)
    assert step(html, "next") == url_of(book, 3)
    # Plain forms that come back here, with the keys the script presses.
    approve = reverse("page-approve", args=[page_of(book, 2).pk])
    assert f'<form method="post" action="{approve}"><input' in html
    assert f'name="next" value="{url_of(book, 2)}"' in html
    assert 'data-gallery-key="a"' in html and 'data-gallery-key="r"' in html
    assert 'data-gallery-key="e"' in html and "hx-post" not in html
    assert 'id="gallery-help"' in html and "<kbd>?</kbd>" in html


def test_the_review_page_opens_the_gallery_in_its_dialog_as_a_fragment(signed_in, book):
    detail = signed_in.get(reverse("project-detail", args=[book.pk]), {"show": "unapproved"})
    assert detail.status_code == 200
    links = re.findall(r'<a href="([^"]+)" data-gallery ', detail.content.decode())
    assert links == [url_of(book, n, "show=unapproved") for n in range(1, 5)]
    assert b'<dialog id="gallery"' in detail.content

    response = gallery(signed_in, book, 1, htmx=True)

    html = response.content.decode()
    assert "<html" not in html and html.lstrip().startswith('<div class="gallery"')
    approve = reverse("page-approve", args=[page_of(book, 1).pk])
    assert f'hx-post="{approve}" hx-swap="none"' in html
    assert step(html, "previous") == url_of(book, 4)  # round the book


def test_the_walk_keeps_to_the_pages_the_filter_shows(signed_in, book):
    services.approve_page(page=page_of(book, 2))

    html = gallery(signed_in, book, 1, show="unapproved").content.decode()

    assert step(html, "next") == url_of(book, 3, "show=unapproved")
    assert step(html, "previous") == url_of(book, 4, "show=unapproved")
    assert "Not approved: 1 of 3" in html
    # A page the filter no longer shows (approved meanwhile) walks on from where it is.
    html = gallery(signed_in, book, 2, show="unapproved").content.decode()
    assert step(html, "next") == url_of(book, 3, "show=unapproved")
    assert step(html, "previous") == url_of(book, 1, "show=unapproved")
    assert "Not approved: this page no longer is; 3 pages still are" in html
    assert 'data-announce="Page 2 of 4, approved"' in html
    # The only page a filter shows has nowhere to go.
    for number in (1, 3, 4):
        services.approve_page(page=page_of(book, number))
    services.unapprove_page(page=page_of(book, 3))
    html = gallery(signed_in, book, 3, show="unapproved").content.decode()
    assert step(html, "next") == step(html, "previous") == ""


def test_the_walk_follows_the_grid_s_sections(signed_in, book):
    for number, section in ((1, "Chapter B"), (2, "Chapter A"), (3, "Chapter B")):
        Page.objects.filter(pk=page_of(book, number).pk).update(section=section)

    html = gallery(signed_in, book, 1).content.decode()

    # The grid: page 4 (in no section), then Chapter B (1, 3), then Chapter A (2).
    assert step(html, "previous") == url_of(book, 4)
    assert step(html, "next") == url_of(book, 3)
    assert step(gallery(signed_in, book, 3).content.decode(), "next") == url_of(book, 2)


def test_versions_are_side_by_side_the_current_first_each_with_its_key(signed_in, book, drain):
    page = page_of(book, 1)
    first = page.illustrations.get(status=Status.COMPLETE)
    redraw(page, drain)
    redraw(page, drain)
    current = page.illustrations.get(status=Status.COMPLETE)

    html = gallery(signed_in, book, 1, htmx=True).content.decode()

    images = re.findall(r'class="gallery__image" src="/images/(\d+)/"', html)
    assert len(images) == 3 and images[0] == str(current.pk) and images[2] == str(first.pk)
    assert "Current picture · shown on the page" in html
    uses = re.findall(r'hx-post="/images/(\d+)/use/"[^>]*>.*?data-gallery-key="(\d)"', html)
    assert uses == [(images[1], "2"), (images[2], "3")]
    assert 'data-gallery-key="1"' not in html  # the picture shown is not chosen again


def test_more_than_four_versions_come_four_at_a_time(signed_in, book, drain):
    page = page_of(book, 1)
    for _ in range(4):
        redraw(page, drain)

    html = gallery(signed_in, book, 1).content.decode()
    assert html.count('class="gallery__image"') == 4
    assert "Versions 1–4 of 5" in html
    earlier = re.search(r'href="([^"]+)" data-gallery-load>Earlier', html).group(1)
    assert earlier == url_of(book, 1, "at=4")

    html = signed_in.get(earlier.replace("&amp;", "&")).content.decode()
    assert html.count('class="gallery__image"') == 1
    assert "Versions 5–5 of 5" in html and "data-gallery-load>Newer" in html


def test_variants_wait_side_by_side_with_the_current_picture_to_keep(signed_in, book, drain):
    page = page_of(book, 3)
    drain(services.queue_variants(page=page, count=4).run.pk)

    html = gallery(signed_in, book, 3, htmx=True).content.decode()

    assert html.count('class="gallery__image"') == 4 and "Variants wait for your pick." in html
    variants = page.illustrations.filter(candidate=True).order_by("variant")
    for variant in variants:  # the keys 1–4 are the variants' numbers
        assert re.search(
            rf'hx-post="/images/{variant.pk}/use/"[^>]*>.*?data-gallery-key="{variant.variant}"',
            html,
        )
    keep = reverse("page-keep-current", args=[page.pk])
    assert re.search(rf'hx-post="{keep}"[^>]*>.*?data-gallery-key="k"', html)
    assert "Pictures 1–4" not in html  # all four at once
    assert 'data-gallery-key="v"' not in html  # no new variants while these wait


def test_without_script_a_choice_comes_back_to_the_gallery(signed_in, book, drain):
    page = page_of(book, 1)
    first = page.illustrations.get(status=Status.COMPLETE)
    redraw(page, drain)
    here = url_of(book, 1, "show=unapproved")

    response = signed_in.post(reverse("version-use", args=[first.pk]), {"next": here})

    assert response.status_code == 302 and response["Location"] == here
    first.refresh_from_db()
    assert first.status == Status.COMPLETE
    html = signed_in.get(here).content.decode()
    assert "Page 1 now shows the version you chose." in html  # the message, on the gallery
    # Another site is never where a form comes back to.
    response = signed_in.post(
        reverse("page-approve", args=[page.pk]), {"next": "https://elsewhere.example/"}
    )
    assert response["Location"] == book.get_absolute_url()


def test_an_approved_page_asks_before_it_is_drawn_again(signed_in, book):
    services.approve_page(page=page_of(book, 4))

    plain = gallery(signed_in, book, 4).content.decode()
    live = gallery(signed_in, book, 4, htmx=True).content.decode()

    question = "Page 4 is approved. Draw it again? The new picture will need approving."
    assert f'data-confirm="{question}"' in plain
    assert f'hx-confirm="{question}"' in live
    assert "Unapprove" in live and 'data-gallery-key="a"' not in live


def test_the_prompt_opened_in_the_gallery_stays_in_its_panel(signed_in, book):
    page = page_of(book, 2)
    url = reverse("page-prompt", args=[page.pk])

    in_gallery = signed_in.get(url, headers={**HTMX, "HX-Target": "gallery-panel"})
    in_drawer = signed_in.get(url, headers=HTMX)
    own_page = signed_in.get(url, {"next": url_of(book, 2)})

    assert b'hx-target="#gallery-panel"' in in_gallery.content
    assert b'hx-target="#panel"' in in_drawer.content
    assert f'name="next" value="{url_of(book, 2)}"'.encode() in own_page.content
    response = signed_in.post(url, {"prompt": "The fox asleep.", "next": url_of(book, 2)})
    assert response.status_code == 302 and response["Location"] == url_of(book, 2)


def test_a_page_without_a_picture_says_so_and_offers_to_draw_it(signed_in, make_project):
    project = make_project(pages=1, title="Empty")
    html = gallery(signed_in, project, 1).content.decode()
    assert "No picture yet." in html and 'data-announce="Page 1 of 1, pending"' in html
    retry = reverse("page-retry", args=[page_of(project, 1).pk])
    assert f'action="{retry}"' in html and ">Generate <kbd" in html


def test_another_editors_gallery_is_not_found_and_bad_input_is_refused(
    client, book, other_editor, make_project
):
    client.force_login(other_editor)
    assert gallery(client, book, 1).status_code == 404

    client.force_login(book.owner)
    other_book = make_project(pages=1, title="Other")
    stranger = reverse("page-gallery", args=[book.pk, page_of(other_book, 1).pk])
    assert client.get(stranger).status_code == 404  # a page of another book
    response = gallery(client, book, 1, show="pretty")
    assert response.status_code == 400
    assert response.content.decode() == "show must be one of all, attention, outdated, unapproved"
    response = gallery(client, book, 1, at="-4")
    assert (response.status_code, response.content) == (
        400,
        b"at must be a whole number of pictures.",
    )
