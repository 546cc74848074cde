"""Size limits are told with the real size of what was refused and the limit that holds,
and every page that states a limit reads it from where the limit is enforced."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from studio.models import Character, Project

pytestmark = pytest.mark.django_db

MB = 1024 * 1024


@pytest.fixture
def signed_in(client, editor):
    client.force_login(editor)
    return client


def upload(name: str, size: int) -> io.BytesIO:
    file = io.BytesIO(b"\x89PNG" + b"0" * (size - 4))
    file.name = name
    return file


def test_a_picture_over_the_limit_is_refused_with_its_own_size(signed_in, make_project):
    project = make_project(pages=1)
    response = signed_in.post(
        reverse("character-list", args=[project.pk]),
        {"name": "Peter", "kind": "character", "image": upload("peter.png", int(10.6 * MB))},
    )
    assert response.status_code == 422
    assert "The picture is 10.6 MB; at most 10 MB is accepted." in response.content.decode()
    assert Character.objects.count() == 0


def test_add_character_names_the_size_of_the_picture_it_refuses(tmp_path, make_project):
    project = make_project(pages=1)
    picture = tmp_path / "huge.png"
    with picture.open("wb") as file:
        file.write(b"\x89PNG")
        file.truncate(int(21.6 * MB))
    with pytest.raises(CommandError) as raised:
        call_command("add_character", str(project.pk), "--name", "Peter", "--image", str(picture))
    assert raised.value.returncode == 2
    assert str(raised.value) == f"{picture}: The picture is 21.6 MB; at most 10 MB is accepted."


def test_a_manuscript_over_the_limit_is_refused_with_its_own_size(signed_in):
    uploaded = signed_in.post(
        reverse("project-create"), {"title": "Big", "upload": upload("book.txt", 3 * MB)}
    )
    pasted = signed_in.post(
        reverse("project-create"), {"title": "Big", "manuscript": "x" * int(2.5 * MB)}
    )
    assert uploaded.status_code == pasted.status_code == 422
    assert "The file is 3.0 MB; a manuscript can be at most 2 MB." in uploaded.content.decode()
    assert "The manuscript is 2.5 MB; a manuscript can be at most 2 MB." in (
        pasted.content.decode()
    )
    assert Project.objects.count() == 0


def test_the_new_project_page_states_the_limits_that_hold(signed_in):
    html = signed_in.get(reverse("project-create")).content.decode()
    assert "At most 2,000 pages of 5,000 characters." in html
    assert "UTF-8 or UTF-16, at most 2 MB." in html
    assert "300 pages" not in html
