"""The page editor: reorder (the endpoint behind drag and drop and Alt+↑/↓), insert a page
after any page, thumbnails, a delete confirmation that shows the picture, and the new
project page's story-writing offer."""

import pytest
from django.core.files.storage import default_storage
from django.urls import reverse

from generation import services
from generation.models import Illustration
from generation.thumbnails import thumbnail_name
from studio.models import Page

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_in(client, editor):
    client.force_login(editor)
    return client


def texts_in_order(project) -> list[str]:
    return list(project.pages.order_by("number").values_list("text", flat=True))


def reorder(client, project, order):
    url = reverse("pages-reorder", args=[project.pk])
    return client.post(url, {"order": ",".join(str(pk) for pk in order)})


# --- reorder -----------------------------------------------------------------------------


def test_reordering_numbers_the_pages_in_the_new_order(signed_in, make_project):
    project = make_project(pages=4)
    one, two, three, four = project.pages.order_by("number")

    response = reorder(signed_in, project, [three.pk, one.pk, two.pk, four.pk])

    assert response.status_code == 200
    assert response.json() == {
        "pages": [
            {"id": three.pk, "number": 1},
            {"id": one.pk, "number": 2},
            {"id": two.pk, "number": 3},
            {"id": four.pk, "number": 4},
        ]
    }
    assert texts_in_order(project) == [three.text, one.text, two.text, four.text]


@pytest.mark.parametrize(
    ("order", "reason"),
    [
        ("1,two,3", "The order must list page ids separated by commas."),
        ("", "The order must list page ids separated by commas."),
    ],
)
def test_a_malformed_order_is_refused_with_its_reason(signed_in, make_project, order, reason):
    project = make_project(pages=3)
    before = texts_in_order(project)
    response = signed_in.post(reverse("pages-reorder", args=[project.pk]), {"order": order})
    assert response.status_code == 400
    assert response.content.decode() == reason
    assert texts_in_order(project) == before


def test_an_order_that_is_not_exactly_the_projects_pages_is_refused(signed_in, make_project):
    project = make_project(pages=3)
    other = make_project(pages=1, title="Other")
    one, two, three = project.pages.order_by("number")
    before = texts_in_order(project)

    missing = reorder(signed_in, project, [two.pk, one.pk])
    foreign = reorder(signed_in, project, [two.pk, one.pk, other.pages.get().pk])
    twice = reorder(signed_in, project, [two.pk, two.pk, one.pk, three.pk])

    assert missing.status_code == foreign.status_code == twice.status_code == 400
    assert "changed in the meantime. Reload the page" in missing.content.decode()
    assert "changed in the meantime" in foreign.content.decode()
    assert twice.content.decode() == "The new order names a page twice."
    assert texts_in_order(project) == before


def test_another_editors_pages_cannot_be_reordered(client, other_editor, make_project):
    project = make_project(pages=2)
    client.force_login(other_editor)
    one, two = project.pages.order_by("number")
    assert reorder(client, project, [two.pk, one.pk]).status_code == 404
    assert list(project.pages.order_by("number").values_list("pk", flat=True)) == [one.pk, two.pk]


def test_a_moved_page_keeps_its_picture(signed_in, make_project, drain):
    project = make_project(pages=3)
    drain(services.generate_missing(project=project).run.pk)
    one, two, three = project.pages.order_by("number")
    picture = Illustration.objects.get(page=one, status="complete").pk

    reorder(signed_in, project, [two.pk, three.pk, one.pk])

    one.refresh_from_db()
    assert one.number == 3
    assert Illustration.objects.get(page=one, status="complete").pk == picture


# --- insert, thumbnails, delete ----------------------------------------------------------


def test_insert_page_after_opens_the_form_for_that_place(signed_in, make_project):
    project = make_project(pages=3)
    second = project.pages.get(number=2)
    second.section = "Chapter 1"
    second.save()

    html = signed_in.get(
        reverse("project-pages", args=[project.pk]), {"after": second.pk}
    ).content.decode()

    assert "Insert a page after page 2" in html
    assert f'name="after" value="{second.pk}"' in html
    assert 'name="section" value="Chapter 1"' in html  # the new page joins its section
    assert "Insert after page 2</button>" in html


def test_inserting_after_a_page_moves_the_later_pages_down(signed_in, make_project):
    project = make_project(pages=3)
    first = project.pages.get(number=1)
    before = texts_in_order(project)

    response = signed_in.post(
        reverse("page-add", args=[project.pk]),
        {"text": "A new page.", "label": "", "section": "", "after": first.pk},
    )

    new = Page.objects.get(text="A new page.")
    assert response.status_code == 302
    assert response["Location"].endswith(f"#edit-page-{new.pk}")
    assert texts_in_order(project) == [before[0], "A new page.", before[1], before[2]]


def test_insert_after_a_page_of_another_project_is_refused(signed_in, make_project):
    project = make_project(pages=2)
    stranger = make_project(pages=1, title="Other").pages.get()
    url = reverse("project-pages", args=[project.pk])
    assert signed_in.get(url, {"after": stranger.pk}).status_code == 400
    assert signed_in.get(url, {"after": "x"}).status_code == 400
    response = signed_in.post(
        reverse("page-add", args=[project.pk]), {"text": "New.", "after": stranger.pk}
    )
    assert response.status_code == 422
    assert "The page to insert after is gone" in response.content.decode()
    assert project.pages.count() == 2


@pytest.mark.storage
def test_the_editor_shows_each_pages_thumbnail_and_its_paragraphs(signed_in, make_project, drain):
    project = make_project(pages=2)
    project.pages.filter(number=2).update(text="First part.\n\nSecond part.")
    job = services.queue_page(page=project.pages.get(number=1)).run
    drain(job.pk)
    picture = Illustration.objects.get(status="complete")

    html = signed_in.get(reverse("project-pages", args=[project.pk])).content.decode()

    assert reverse("illustration-thumbnail", args=[picture.pk]) in html
    assert html.count("No picture yet") == 1  # page 2
    assert "<p>First part.</p>\n\n<p>Second part.</p>" in html
    # The thumbnail is made on first request, stored beside the picture and served from there.
    thumbnail = signed_in.get(reverse("illustration-thumbnail", args=[picture.pk]))
    body = b"".join(thumbnail.streaming_content)
    assert (thumbnail.status_code, body[:4], body[8:12]) == (200, b"RIFF", b"WEBP")
    assert default_storage.exists(thumbnail_name(picture.image.name))


def test_the_delete_confirmation_shows_the_picture_that_goes(signed_in, make_project, drain):
    project = make_project(pages=2)
    drain(services.generate_missing(project=project).run.pk)
    page = project.pages.get(number=2)
    picture = Illustration.objects.get(page=page, status="complete")

    html = signed_in.get(reverse("page-delete", args=[page.pk])).content.decode()

    assert f'src="{reverse("illustration-thumbnail", args=[picture.pk])}"' in html
    assert "The picture of page 2, deleted with it" in html


def test_the_delete_confirmation_of_a_page_without_a_picture_says_so(signed_in, make_project):
    page = make_project(pages=1).pages.get()
    html = signed_in.get(reverse("page-delete", args=[page.pk])).content.decode()
    assert "This page has no picture yet." in html


# --- writing from a premise --------------------------------------------------------------


def test_without_a_text_service_the_new_project_page_says_story_writing_is_not_set_up(
    signed_in, settings
):
    settings.STUDIO_TEXT_PROVIDER = ""
    html = signed_in.get(reverse("project-create")).content.decode()
    assert "Writing a story from a premise is not set up in this studio yet" in html
    assert reverse("project-create-premise") not in html


def test_with_a_text_service_the_new_project_page_offers_writing_from_a_premise(
    signed_in, openai_settings
):
    html = signed_in.get(reverse("project-create")).content.decode()
    assert f'href="{reverse("project-create-premise")}"' in html
    assert "not set up" not in html


def test_the_section_field_suggests_the_projects_sections(signed_in, make_project):
    project = make_project(pages=3)
    project.pages.filter(number=1).update(section="Chapter 1")
    project.pages.filter(number__in=[2, 3]).update(section="Chapter 2")
    page = project.pages.get(number=3)
    for url in (reverse("page-edit", args=[page.pk]), reverse("project-pages", args=[project.pk])):
        html = signed_in.get(url).content.decode()
        assert 'list="project-sections"' in html
        assert (
            '<datalist id="project-sections"><option value="Chapter 1">'
            '<option value="Chapter 2"></datalist>'
        ) in html


def test_a_book_of_2000_pages_takes_no_more(signed_in, make_project):
    project = make_project(pages=2000)
    response = signed_in.post(reverse("page-add", args=[project.pk]), {"text": "One more."})
    assert response.status_code == 422
    assert "A project can have at most 2,000 pages; this one would have 2,001." in (
        response.content.decode()
    )
    assert project.pages.count() == 2000
