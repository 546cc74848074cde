"""Projects and pages: create (blank, manuscript, premise), settings, delete, page editing."""

import io

import pytest
from django.core.files.storage import default_storage
from django.urls import reverse

from generation import services
from generation.models import Illustration, StoryJob
from generation.prompts import compose_prompt
from studio.models import Page, Project

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_in(client, editor):
    client.force_login(editor)
    return client


def numbers_and_texts(project):
    return list(project.pages.order_by("number").values_list("number", "text"))


# --- creating ------------------------------------------------------------------------------


def test_a_blank_project_is_created_from_a_title(signed_in, editor):
    response = signed_in.post(reverse("project-create"), {"title": "  Storyboard  "})
    project = Project.objects.get()
    assert response.status_code == 302
    assert response["Location"] == project.get_absolute_url()
    assert (project.title, project.owner, project.pages.count()) == ("Storyboard", editor, 0)


def test_a_pasted_manuscript_is_previewed_then_created(signed_in):
    data = {"title": "Fox", "manuscript": "One.\r\n---\r\nTwo.\n---\n\n---\nThree."}
    preview = signed_in.post(reverse("project-create"), {**data, "preview": "1"})
    html = preview.content.decode()
    assert preview.status_code == 200
    assert "3 pages" in html
    assert 'Page 3</span> <div class="preview-list__text"><p>Three.</p>' in html
    assert Project.objects.count() == 0  # a preview saves nothing

    signed_in.post(reverse("project-create"), data)
    assert numbers_and_texts(Project.objects.get()) == [(1, "One."), (2, "Two."), (3, "Three.")]


def test_an_uploaded_manuscript_is_split_into_pages(signed_in):
    upload = io.BytesIO("\ufeffOne.\n---\nTwo.".encode())
    upload.name = "book.md"
    signed_in.post(reverse("project-create"), {"title": "Up", "upload": upload})
    assert numbers_and_texts(Project.objects.get()) == [(1, "One."), (2, "Two.")]


def test_a_utf16_manuscript_from_a_word_processor_is_split_into_pages(signed_in):
    upload = io.BytesIO("\ufeffUne.\r\n---\r\nDeux été.".encode("utf-16-le"))
    upload.name = "book.txt"
    response = signed_in.post(reverse("project-create"), {"title": "Up", "upload": upload})
    assert response.status_code == 302
    assert numbers_and_texts(Project.objects.get()) == [(1, "Une."), (2, "Deux été.")]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("cover.png", b"\x89PNG\r\n\x1a\n\x00", "Upload a .txt or .md file."),
        ("book.txt", b"\x00\x01\x02 binary", "This file is not text."),
        ("book.txt", "\n---\n".join("p" for _ in range(2001)).encode(), "2,001 pages"),
        ("book.txt", b"x" * (2 * 1024 * 1024 + 1), "at most 2 MB"),
    ],
)
def test_bad_uploads_get_a_clear_form_error_and_save_nothing(signed_in, name, content, message):
    upload = io.BytesIO(content)
    upload.name = name
    response = signed_in.post(reverse("project-create"), {"title": "Bad", "upload": upload})
    assert response.status_code == 422
    assert message in response.content.decode()
    assert Project.objects.count() == 0


def test_a_page_too_long_is_named_in_the_error(signed_in):
    response = signed_in.post(
        reverse("project-create"), {"title": "Long", "manuscript": "ok\n---\n" + "z" * 5001}
    )
    assert response.status_code == 422
    assert (
        "Page 2 has 5,001 characters; a page can have at most 5,000." in response.content.decode()
    )


def test_the_premise_path_says_when_no_text_service_is_configured(signed_in, settings):
    settings.STUDIO_TEXT_PROVIDER = ""
    page = signed_in.get(reverse("project-create-premise")).content.decode()
    assert "No text service is configured" in page
    assert "Start from a manuscript instead." in page
    response = signed_in.post(
        reverse("project-create-premise"),
        {"title": "T", "premise": "A fox", "page_count": 6},
    )
    assert response.status_code == 422
    assert Project.objects.count() == 0


def test_the_premise_path_writes_the_story_visibly(signed_in, openai_settings, fake_openai, drain):
    response = signed_in.post(
        reverse("project-create-premise"),
        {
            "title": "Swim",
            "premise": "A fox learns to swim",
            "audience": "ages 4-6",
            "page_count": 5,
        },
    )
    project = Project.objects.get()
    generating = reverse("project-generating", args=[project.pk])
    assert response["Location"] == generating
    html = signed_in.get(generating).content.decode()
    assert "Writing 5 pages from the premise" in html
    assert "Queued" in html and "data-poll" in html

    drain(StoryJob.objects.get().run_id, kind="story")
    poll = signed_in.get(generating, headers={"HX-Request": "true"})
    assert poll.status_code == 286
    assert "Written: 5 pages." in poll.content.decode()
    assert 'Generate Missing Illustrations <span class="badge">(5)</span>' in poll.content.decode()
    assert project.pages.count() == 5


# --- settings and delete -----------------------------------------------------------------------


def test_rename_and_style_guide(signed_in, make_project):
    project = make_project(pages=1)
    url = reverse("project-settings", args=[project.pk])
    signed_in.post(url, {"title": "Renamed", "style_guide": "Pastel crayons."})
    project.refresh_from_db()
    assert (project.title, project.style_guide) == ("Renamed", "Pastel crayons.")
    response = signed_in.post(url, {"title": "   ", "style_guide": ""})
    assert response.status_code == 422
    assert "Give the project a title." in response.content.decode()


@pytest.mark.storage
def test_delete_asks_first_then_removes_the_project_and_its_files(
    signed_in, make_project, drain, django_capture_on_commit_callbacks
):
    project = make_project(pages=2)
    drain(services.generate_missing(project=project).run.pk)
    names = [i.image.name for i in Illustration.objects.all()]
    signed_in.get(reverse("illustration-thumbnail", args=[Illustration.objects.first().pk]))
    assert all(default_storage.exists(name) for name in names)

    confirm = signed_in.get(reverse("project-delete", args=[project.pk]))
    assert "This deletes its 2 pages, 2 stored images" in confirm.content.decode()
    assert Project.objects.count() == 1

    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in.post(reverse("project-delete", args=[project.pk]))
    assert response["Location"] == reverse("project-list")
    assert Project.objects.count() == 0 and Illustration.objects.count() == 0
    assert not any(default_storage.exists(name) for name in names)
    assert not any(default_storage.exists(name.replace(".png", ".thumb.webp")) for name in names)


# --- pages ---------------------------------------------------------------------------------------


def test_pages_can_be_added_removed_and_moved_and_numbers_stay_contiguous(signed_in, make_project):
    project = make_project(pages=3)
    p1, p2, p3 = project.pages.order_by("number")

    signed_in.post(reverse("page-add", args=[project.pk]), {"text": "Four.", "label": "Beat 2.1"})
    signed_in.post(reverse("page-add", args=[project.pk]), {"text": "After one.", "after": p1.pk})
    assert [t for _, t in numbers_and_texts(project)] == [
        p1.text,
        "After one.",
        p2.text,
        p3.text,
        "Four.",
    ]

    signed_in.post(reverse("page-delete", args=[p2.pk]))
    signed_in.post(reverse("page-move", args=[p3.pk]), {"direction": "up"})
    signed_in.post(reverse("page-move", args=[p1.pk]), {"direction": "up"})  # already first
    numbers = numbers_and_texts(project)
    assert [n for n, _ in numbers] == [1, 2, 3, 4]
    assert [t for _, t in numbers] == [p1.text, p3.text, "After one.", "Four."]
    assert Page.objects.get(text="Four.").label == "Beat 2.1"


def test_a_label_shows_on_the_card(signed_in, make_project):
    project = make_project(pages=1)
    page = project.pages.get()
    signed_in.post(
        reverse("page-edit", args=[page.pk]),
        {"label": "Scene 3 · Shot 2", "text": page.text, "prompt": ""},
    )
    html = signed_in.get(project.get_absolute_url()).content.decode()
    assert '<span class="card__label" title="Scene 3 · Shot 2">Scene 3 · Shot 2</span>' in html


def test_editing_the_prompt_of_an_illustrated_page_marks_it_outdated_and_queues_nothing(
    signed_in, make_project, drain
):
    project = make_project(pages=2)
    drain(services.generate_missing(project=project).run.pk)
    page = project.pages.get(number=1)
    response = signed_in.post(
        reverse("page-edit", args=[page.pk]),
        {"label": "", "text": page.text, "prompt": "A fox at dawn"},
        follow=True,
    )
    assert "press Regenerate to draw it again" in response.content.decode()
    html = signed_in.get(project.get_absolute_url()).content.decode()
    assert html.count('class="card card--outdated"') == 1
    assert "Prompt changed" in html
    assert Illustration.objects.filter(status="queued").count() == 0  # never redrawn silently


def test_an_empty_page_text_is_refused(signed_in, make_project):
    page = make_project(pages=1).pages.get()
    response = signed_in.post(reverse("page-edit", args=[page.pk]), {"text": "  ", "prompt": ""})
    assert response.status_code == 422
    assert "A page needs some text." in response.content.decode()


# --- the prompt actually sent ---------------------------------------------------------------


def test_the_style_guide_is_composed_into_every_prompt(make_project):
    project = make_project(pages=2, style_guide="  Watercolour; Fox wears a red scarf.  ")
    first, second = project.pages.order_by("number")
    second.prompt = "  The fox swims.  "
    assert compose_prompt(first) == (
        "Page 1: the fox crosses meadow number 1.\n\n"
        "Style guide: Watercolour; Fox wears a red scarf."
    )
    assert compose_prompt(second) == (
        "The fox swims.\n\nStyle guide: Watercolour; Fox wears a red scarf."
    )
    project.style_guide = ""
    assert compose_prompt(second) == "The fox swims."
    second.prompt = "x" * 5000
    assert len(compose_prompt(second)) == 4000


def test_the_prompt_sent_is_stored_and_shown_in_history(signed_in, make_project, drain):
    project = make_project(pages=1, style_guide="Ink.")
    drain(services.generate_missing(project=project).run.pk)
    job = Illustration.objects.get()
    assert job.prompt_sent == "Page 1: the fox crosses meadow number 1.\n\nStyle guide: Ink."
    page = project.pages.get()
    html = signed_in.get(reverse("page-history", args=[page.pk])).content.decode()
    assert "Style guide: Ink." in html


def test_an_editor_at_the_project_cap_is_told_so_and_nothing_is_created(
    signed_in, editor, settings, tmp_path
):
    from django.core.management import CommandError, call_command

    settings.STUDIO_PROJECTS_PER_EDITOR = 2
    for title in ("One", "Two"):
        assert signed_in.post(reverse("project-create"), {"title": title}).status_code == 302

    refused = signed_in.post(reverse("project-create"), {"title": "Three"})
    assert refused.status_code == 422
    assert "You have 2 projects, the most one editor may have" in refused.content.decode()
    manuscript = tmp_path / "three.txt"
    manuscript.write_text("A page.", encoding="utf-8")
    with pytest.raises(CommandError, match="You have 2 projects") as raised:
        call_command("import_project", str(manuscript), "--title", "Three", "--owner", "alice")
    assert raised.value.returncode == 2
    assert Project.objects.filter(owner=editor).count() == 2
