"""Sections: pages may belong to a named section (a chapter, a scene); manuscripts name
them with a `## Heading` line; the review page groups the cards by section, each with its
progress and "Generate missing in this section"."""

import json
import re

import pytest
from django.core.management import call_command
from django.urls import reverse

from generation import services
from generation.models import Illustration
from studio.manuscript import ManuscriptError, ManuscriptPage, parse_manuscript
from studio.models import Project

pytestmark = pytest.mark.django_db

Status = Illustration.Status
HTMX = {"HX-Request": "true"}

MANUSCRIPT = """The fox woke.
---
## Chapter 1: The River
The fox ran to the river.

It was cold.
---
The fox swam.
---
## Chapter 2 ##
---
The fox slept.
"""


@pytest.fixture
def signed_in(client, editor):
    client.force_login(editor)
    return client


def sectioned(make_project, sections: list[str]) -> Project:
    """A project whose pages are in the given sections, in order."""
    project = make_project(pages=len(sections), title="Chapters")
    for page, section in zip(project.pages.order_by("number"), sections, strict=True):
        page.section = section
        page.save()
    return project


def headings(html: str) -> list[str]:
    return re.findall(r'<h2 class="section-head__title">([^<]*)</h2>', html)


def section_buttons(html: str) -> list[str]:
    return re.findall(r"Generate missing in this section <span class=\"badge\">\((\d+)\)", html)


# --- the manuscript ----------------------------------------------------------------------


def test_a_heading_line_starts_a_section_that_lasts_until_the_next():
    assert parse_manuscript(MANUSCRIPT) == [
        ManuscriptPage("The fox woke.", ""),
        ManuscriptPage("The fox ran to the river.\n\nIt was cold.", "Chapter 1: The River"),
        ManuscriptPage("The fox swam.", "Chapter 1: The River"),
        ManuscriptPage("The fox slept.", "Chapter 2"),  # a heading alone names the next page
    ]


def test_a_single_hash_is_text_not_a_heading():
    assert parse_manuscript("# 1 fox\n---\n##nospace") == [
        ManuscriptPage("# 1 fox", ""),
        ManuscriptPage("##nospace", ""),
    ]


def test_a_section_name_over_80_characters_is_refused_clearly():
    with pytest.raises(ManuscriptError, match="section heading before page 1 has 81 characters"):
        parse_manuscript("## " + "x" * 81 + "\nText.")


def test_import_project_keeps_the_sections(tmp_path, editor):
    manuscript = tmp_path / "book.md"
    manuscript.write_text(MANUSCRIPT)
    call_command("import_project", str(manuscript), "--title", "Fox", "--owner", "alice")
    pages = Project.objects.get().pages.order_by("number")
    assert list(pages.values_list("number", "section")) == [
        (1, ""),
        (2, "Chapter 1: The River"),
        (3, "Chapter 1: The River"),
        (4, "Chapter 2"),
    ]
    assert pages.get(number=2).text == "The fox ran to the river.\n\nIt was cold."


def test_the_new_project_preview_shows_the_sections_then_creates_them(signed_in):
    data = {"title": "Fox", "manuscript": MANUSCRIPT}
    html = signed_in.post(reverse("project-create"), {**data, "preview": "1"}).content.decode()
    assert "Section: Chapter 1: The River" in html and "Section: Chapter 2" in html
    assert "<p>The fox ran to the river.</p>\n\n<p>It was cold.</p>" in html  # paragraphs
    assert "data-scroll-into-view" in html
    signed_in.post(reverse("project-create"), data)
    sections = Project.objects.get().pages.values_list("section", flat=True)
    assert list(sections) == ["", "Chapter 1: The River", "Chapter 1: The River", "Chapter 2"]


# --- the service -------------------------------------------------------------------------


def test_generate_missing_in_a_section_queues_only_that_sections_missing_pages(make_project):
    project = sectioned(make_project, ["Intro", "Chapter 1", "Chapter 1", "Chapter 1", "End"])
    done = project.pages.get(number=2)
    Illustration.objects.create(page=done, status=Status.COMPLETE)

    queued = services.generate_missing_in_section(project=project, section="Chapter 1")

    assert queued.count == 2
    numbers = Illustration.objects.filter(status=Status.QUEUED).values_list("page__number")
    assert sorted(n for (n,) in numbers) == [3, 4]
    again = services.generate_missing_in_section(project=project, section="Chapter 1")
    assert again.count == 0  # a double click queues nothing more


def test_the_pages_before_the_first_section_are_a_section_too(make_project):
    project = sectioned(make_project, ["", "", "Chapter 1"])
    assert services.generate_missing_in_section(project=project, section="").count == 2


# --- the review page ---------------------------------------------------------------------


def test_the_review_page_groups_cards_under_their_sections_with_progress(signed_in, make_project):
    project = sectioned(make_project, ["", "Chapter 1", "Chapter 1", "Chapter 2"])
    page = project.pages.get(number=1)
    page.label = "Beat 0.1"
    page.save()
    Illustration.objects.create(page=project.pages.get(number=2), status=Status.COMPLETE)

    html = signed_in.get(project.get_absolute_url()).content.decode()

    assert headings(html) == ["Pages before the first section", "Chapter 1", "Chapter 2"]
    assert section_buttons(html) == ["1", "1", "1"]
    assert "1 of 2 illustrated" in html  # Chapter 1's progress
    # Each heading comes right before its section's first card.
    order = re.findall(r'(section-head__title">[^<]*|<article id="page-\d+")', html)
    pages = list(project.pages.order_by("number").values_list("pk", flat=True))
    assert order == [
        'section-head__title">Pages before the first section',
        f'<article id="page-{pages[0]}"',
        'section-head__title">Chapter 1',
        f'<article id="page-{pages[1]}"',
        f'<article id="page-{pages[2]}"',
        'section-head__title">Chapter 2',
        f'<article id="page-{pages[3]}"',
    ]
    assert "Beat 0.1" in html  # labels keep working


def test_a_book_without_sections_shows_one_plain_grid(signed_in, make_project):
    html = signed_in.get(make_project(pages=3).get_absolute_url()).content.decode()
    assert headings(html) == []
    assert "section-head" not in html


def test_generate_missing_in_this_section_from_the_review_page(signed_in, make_project):
    project = sectioned(make_project, ["Chapter 1", "Chapter 1", "Chapter 2"])
    url = reverse("project-generate-section", args=[project.pk])

    response = signed_in.post(url, {"section": "Chapter 1"}, headers=HTMX)

    assert response.status_code == 200
    toast = json.loads(response["HX-Trigger"])["toast"]
    assert toast["message"] == "Queued 2 illustrations in “Chapter 1”."
    numbers = Illustration.objects.values_list("page__number", flat=True)
    assert sorted(numbers) == [1, 2]
    # The answer refreshes the sections' headings with the new counts.
    assert 'id="section-1" class="section-head" hx-swap-oob="true"' in response.content.decode()
    assert "2 queued" in response.content.decode()


def test_generate_missing_in_a_section_refuses_bad_input_with_a_reason(signed_in, make_project):
    project = sectioned(make_project, ["Chapter 1"])
    url = reverse("project-generate-section", args=[project.pk])

    nameless = signed_in.post(url)
    unknown = signed_in.post(url, {"section": "Chapter 9"})

    assert nameless.status_code == unknown.status_code == 400
    assert "Say which section" in nameless.content.decode()
    assert "no section named “Chapter 9”" in unknown.content.decode()
    assert Illustration.objects.count() == 0


def test_the_poll_refreshes_the_section_headings_when_cards_change(signed_in, make_project, drain):
    project = sectioned(make_project, ["Chapter 1", "Chapter 2"])
    run = services.generate_missing_in_section(project=project, section="Chapter 2").run
    drain(run.pk)
    response = signed_in.get(
        reverse("project-poll", args=[project.pk]), {"since": "0"}, headers=HTMX
    )
    html = response.content.decode()
    assert 'id="section-2" class="section-head" hx-swap-oob="true"' in html
    assert "1 of 1 illustrated" in html


def test_the_section_is_edited_with_the_page(signed_in, make_project):
    project = make_project(pages=1)
    page = project.pages.get()
    response = signed_in.post(
        reverse("page-edit", args=[page.pk]),
        {"section": "  Scene 4 ", "label": "", "text": page.text, "prompt": ""},
    )
    assert response.status_code == 302
    page.refresh_from_db()
    assert page.section == "Scene 4"


def test_sections_stay_whole_when_pages_are_reordered_across_their_headings(
    signed_in, make_project
):
    from studio import services as studio_services

    project = sectioned(
        make_project, ["", "Chapter 1", "Chapter 1", "Chapter 1", "Chapter 2", "Chapter 2"]
    )
    title, one_a, one_b, one_c, two_a, two_b = project.pages.order_by("number")
    Illustration.objects.create(page=one_a, status=Status.COMPLETE)
    # A page of Chapter 1 above the title page, a page of Chapter 2 to position 2.
    order = [one_b, two_b, title, one_a, one_c, two_a]
    studio_services.reorder_pages(project=project, order=[page.pk for page in order])

    html = signed_in.get(project.get_absolute_url()).content.decode()

    # Each section once, "Pages before the first section" first, then the named sections
    # in the order their first pages come; each section's cards in page order.
    assert headings(html) == ["Pages before the first section", "Chapter 1", "Chapter 2"]
    sequence = re.findall(r'(section-head__title">[^<]*|<article id="page-\d+")', html)
    assert sequence == [
        'section-head__title">Pages before the first section',
        f'<article id="page-{title.pk}"',
        'section-head__title">Chapter 1',
        f'<article id="page-{one_b.pk}"',
        f'<article id="page-{one_a.pk}"',
        f'<article id="page-{one_c.pk}"',
        'section-head__title">Chapter 2',
        f'<article id="page-{two_b.pk}"',
        f'<article id="page-{two_a.pk}"',
    ]
    progress = re.findall(r'section-head__progress">(\d+) of (\d+) illustrated', html)
    assert progress == [("0", "1"), ("1", "3"), ("0", "2")]  # each over its own cards
