import json

import pytest
from django.urls import reverse

from generation import services
from generation.models import Illustration

pytestmark = pytest.mark.django_db


@pytest.fixture
def book(make_project):
    return make_project(pages=3, title="Owned Book")


def urls_of(project, *, image_pk):
    return {
        "list": ("get", reverse("project-list")),
        "detail": ("get", reverse("project-detail", args=[project.pk])),
        "generate": ("post", reverse("project-generate", args=[project.pk])),
        "image": ("get", reverse("illustration-image", args=[image_pk])),
    }


@pytest.fixture
def image(book, drain):
    run = services.generate_missing(project=book).run
    drain(run.pk)
    return Illustration.objects.filter(page__project=book).first()


def test_anonymous_visitors_are_sent_to_sign_in(client, book, image):
    for method, url in urls_of(book, image_pk=image.pk).values():
        response = getattr(client, method)(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url


def test_another_editors_project_and_images_answer_404(client, book, image, other_editor):
    client.force_login(other_editor)
    routes = urls_of(book, image_pk=image.pk)
    for name in ("detail", "generate", "image"):
        method, url = routes[name]
        assert getattr(client, method)(url).status_code == 404, name
    response = client.get(routes["list"][1])
    assert response.status_code == 200
    assert b"Owned Book" not in response.content


def test_the_owner_sees_the_list_the_review_page_and_the_image(client, editor, book, image):
    client.force_login(editor)
    assert b"Owned Book" in client.get(reverse("project-list")).content
    assert client.get(reverse("project-detail", args=[book.pk])).status_code == 200
    response = client.get(reverse("illustration-image", args=[image.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content)[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_review_page_offers_generate_missing_with_the_count(client, editor, make_project):
    project = make_project(pages=24)
    client.force_login(editor)
    response = client.get(reverse("project-detail", args=[project.pk]))
    html = response.content.decode()
    assert "Generate Missing Illustrations" in html
    assert '<span class="badge">(24)</span>' in html
    assert html.count('class="card card--pending"') == 24
    assert 'hx-trigger="every 2s"' not in html  # nothing active: no polling


def test_the_button_is_hidden_when_nothing_is_missing(client, editor, book, image):
    client.force_login(editor)
    html = client.get(reverse("project-detail", args=[book.pk])).content.decode()
    assert "Generate Missing Illustrations" not in html
    assert "Complete" in html


def test_generate_queues_the_missing_pages_and_answers_the_live_region(client, editor, book):
    client.force_login(editor)
    url = reverse("project-generate", args=[book.pk])
    response = client.post(url, headers={"HX-Request": "true"})
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="live"')
    assert 'hx-trigger="every 2s"' in html
    assert html.count('class="card card--queued"') == 3
    assert json.loads(response["HX-Trigger"]) == {
        "toast": {"level": "info", "message": "Queued 3 illustrations."}
    }
    again = client.post(url, headers={"HX-Request": "true"})
    assert json.loads(again["HX-Trigger"])["toast"]["message"].startswith("Nothing to queue")
    assert Illustration.objects.filter(page__project=book).count() == 3


def test_generate_without_javascript_redirects_back(client, editor, book):
    client.force_login(editor)
    response = client.post(reverse("project-generate", args=[book.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("project-detail", args=[book.pk])
    assert Illustration.objects.filter(status="queued").count() == 3


def test_get_never_queues_work(client, editor, book):
    client.force_login(editor)
    assert client.get(reverse("project-generate", args=[book.pk])).status_code == 405
    client.get(reverse("project-detail", args=[book.pk]))
    assert Illustration.objects.count() == 0


def test_the_poll_keeps_polling_while_active_and_stops_with_286_when_idle(
    client, editor, book, drain
):
    client.force_login(editor)
    url = reverse("project-detail", args=[book.pk])
    run = services.generate_missing(project=book).run
    busy = client.get(url, headers={"HX-Request": "true"})
    assert busy.status_code == 200
    assert 'hx-trigger="every 2s"' in busy.content.decode()
    drain(run.pk)
    idle = client.get(url, headers={"HX-Request": "true"})
    assert idle.status_code == 286
    assert "hx-trigger" not in idle.content.decode()
    assert "3 of 3 illustrated" in idle.content.decode()
