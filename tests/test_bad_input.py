"""Bad input from a browser or a script is a 400 that says why, never a 500 (issue 30,
item 11): numbers in the address or the form that are not numbers, not finite, or too big
for the database."""

import pytest
from django.urls import reverse

from studio.models import Character

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}


@pytest.fixture
def signed_in(client, editor):
    client.force_login(editor)
    return client


@pytest.mark.parametrize("version", ["abc", "1.5", "", "-1", "²", "9" * 5000])
def test_choosing_a_version_that_is_not_a_version_number_is_a_400(signed_in, make_project, version):
    character = Character.objects.create(project=make_project(pages=1), name="Peter")
    url = reverse("character-choose", args=[character.pk])
    response = signed_in.post(url, {"version": version})
    assert response.status_code == 400
    assert "version must be the number of one of the character's versions" in (
        response.content.decode()
    )


@pytest.mark.parametrize(
    "since", ["nan", "1e300", "-1e20", "inf", "-inf", "1e18", "-62135596800", "9" * 5000]
)
def test_a_poll_cursor_that_is_no_time_is_a_400(signed_in, make_project, since):
    url = reverse("project-poll", args=[make_project(pages=1).pk])
    response = signed_in.get(url, {"since": since}, headers=HTMX)
    assert response.status_code == 400
    assert "since must be a timestamp" in response.content.decode()


def test_choosing_a_version_number_that_is_no_version_is_a_404(signed_in, make_project):
    character = Character.objects.create(project=make_project(pages=1), name="Peter")
    url = reverse("character-choose", args=[character.pk])
    assert signed_in.post(url, {"version": "12345678901"}).status_code == 404
    assert signed_in.post(url, {"version": "0"}).status_code == 404


@pytest.mark.parametrize("shown", ["²", "9" * 5000])
def test_a_poll_version_of_odd_digits_is_only_an_unknown_version(signed_in, make_project, shown):
    project = make_project(pages=1)
    signed_in.get(reverse("project-detail", args=[project.pk]))  # sets the CSRF cookie
    url = reverse("project-poll", args=[project.pk])
    response = signed_in.get(url, {"since": "1700000000", "v": shown}, headers=HTMX)
    assert response.status_code in (200, 286)


@pytest.mark.parametrize("after", ["99999999999999999999999", "-5", "x"])
def test_inserting_after_a_page_id_too_big_for_the_database_is_a_400(
    signed_in, make_project, after
):
    url = reverse("project-pages", args=[make_project(pages=1).pk])
    response = signed_in.get(url, {"after": after})
    assert response.status_code == 400
    assert "There is no such page in this project to insert after." in response.content.decode()


def test_a_page_order_with_an_id_too_big_for_the_database_is_a_400(signed_in, make_project):
    project = make_project(pages=2)
    first, _ = project.pages.values_list("pk", flat=True)
    url = reverse("pages-reorder", args=[project.pk])
    response = signed_in.post(url, {"order": f"{first},99999999999999999999999"})
    assert response.status_code == 400


def test_a_bad_request_raised_by_a_view_says_why(signed_in, make_project):
    page = make_project(pages=2).pages.first()
    response = signed_in.post(reverse("page-move", args=[page.pk]), {"direction": "sideways"})
    assert response.status_code == 400
    assert response.content.decode() == "direction must be up or down"


def test_a_spread_number_too_big_is_a_400(signed_in, make_project):
    url = reverse("project-book", args=[make_project(pages=1).pk])
    response = signed_in.get(url, {"spread": "9" * 5000})
    assert response.status_code == 400
    assert "spread must be a whole number" in response.content.decode()


@pytest.mark.parametrize("due", ["nan", "inf", "soon"])
def test_a_poll_whose_due_is_no_time_is_refused(signed_in, make_project, due):
    project = make_project(pages=1)
    url = reverse("project-poll", args=[project.pk])
    response = signed_in.get(url, {"since": "1700000000", "v": "1", "due": due}, headers=HTMX)
    assert response.status_code == 400
    assert b"due must be a timestamp" in response.content
