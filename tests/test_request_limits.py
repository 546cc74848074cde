"""Request bodies are refused by their declared size before anything reads them (issue 30,
item 4): 413 naming the limit, 3 MB for forms and 11 MB for file uploads (a 10 MB
reference picture and its form); a body without a length is refused, never read."""

import io

import pytest
from django.urls import reverse

from studio.models import Character

pytestmark = pytest.mark.django_db
MB = 1024 * 1024


class UnreadBody(io.RawIOBase):
    """A request body that fails the test if anything reads it."""

    def read(self, *args):
        raise AssertionError("the body was read")

    readline = readinto = read


def declared(size: int, content_type: str) -> dict:
    """A request that declares `size` bytes of body and sends none the studio may read."""
    return {"CONTENT_LENGTH": str(size), "CONTENT_TYPE": content_type, "wsgi.input": UnreadBody()}


def test_a_forty_mb_reference_picture_is_refused_before_it_is_read(client, editor, make_project):
    client.force_login(editor)
    url = reverse("character-list", args=[make_project(pages=1).pk])
    response = client.generic("POST", url, **declared(40 * MB, "multipart/form-data; boundary=xyz"))
    assert response.status_code == 413
    assert response.content.decode() == "The request is 40.0 MB; the studio takes at most 11 MB."
    assert Character.objects.count() == 0


def test_anyone_signed_in_or_not_is_refused_a_thirty_mb_upload(client):
    response = client.generic(
        "POST", reverse("login"), **declared(30 * MB, "multipart/form-data; boundary=xyz")
    )
    assert response.status_code == 413
    assert "at most 11 MB" in response.content.decode()


def test_a_form_body_over_three_mb_is_refused_by_its_length(client, editor):
    client.force_login(editor)
    response = client.generic(
        "POST",
        reverse("project-create"),
        **declared(4 * MB, "application/x-www-form-urlencoded"),
    )
    assert response.status_code == 413
    assert response.content.decode() == "The request is 4.0 MB; the studio takes at most 3 MB."


def test_a_form_whose_text_is_over_three_mb_inside_an_upload_says_so(client, editor):
    client.force_login(editor)
    response = client.post(
        reverse("project-create"), {"title": "Big", "manuscript": "x" * (4 * MB)}
    )
    assert response.status_code == 400
    assert response.content.decode() == (
        "The form's text is over 3 MB; that is the most it can be."
    )


def test_a_body_without_a_length_is_refused_unread(client):
    response = client.generic(
        "POST",
        reverse("login"),
        CONTENT_LENGTH="",
        CONTENT_TYPE="multipart/form-data; boundary=xyz",
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": UnreadBody()},
    )
    assert response.status_code == 411
    assert response.content.decode() == "Send the body with a Content-Length (at most 11 MB)."


@pytest.mark.parametrize(("length", "status"), [("abc", 400), ("9" * 5000, 413), ("-1", 400)])
def test_a_content_length_that_is_no_size_is_refused(client, length, status):
    response = client.generic(
        "POST", reverse("login"), **declared(0, "text/plain") | {"CONTENT_LENGTH": length}
    )
    assert response.status_code == status


def test_a_picture_within_the_documented_ten_mb_reaches_the_form(
    client, editor, make_project, settings, tmp_path
):
    # The limits the docs state are the ones that hold: 10 MB of picture and its form pass
    # the body limit, and the form itself says what is wrong with the file.
    settings.MEDIA_ROOT = tmp_path
    client.force_login(editor)
    upload = io.BytesIO(b"\x00" * (10 * MB))
    upload.name = "peter.png"
    response = client.post(
        reverse("character-list", args=[make_project(pages=1).pk]),
        {"name": "Peter", "kind": "character", "description": "", "aliases": "", "image": upload},
    )
    assert response.status_code == 422
    assert "That file is not a picture the studio can read" in response.content.decode()
