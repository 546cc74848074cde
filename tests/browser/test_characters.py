"""An editor adds a character, has the studio draw its sheet offline with a real worker,
tags it on two illustrated pages, sees them marked "Reference changed" and regenerates
them: both pages are drawn with the character's sheet sent along.

(That the offline renderer draws the same figure on both pages from that sheet is checked
on the pictures themselves in tests/test_embedded_references.py.)
"""

import re

import pytest
from playwright.sync_api import expect

from generation.models import Illustration, SheetJob
from studio.models import Character
from tests.browser.conftest import card_action, screenshot, sign_in

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_character_sheet_drawn_offline_is_sent_with_the_two_pages_it_is_tagged_on(
    page, web_server, qcluster, make_project
):
    project = make_project(pages=3, title="Benjamin's Book")
    qcluster(STUDIO_WORKERS=2)
    server = web_server()
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    page.get_by_role("button", name=re.compile("Generate Missing Illustrations")).click()
    expect(page.locator(".card--complete")).to_have_count(3, timeout=30_000)

    page.get_by_role("link", name="Characters").click()
    page.locator("#id_name").fill("Benjamin")
    page.locator("#id_description").fill("A small rabbit in a brown tam-o'-shanter.")
    page.get_by_role("button", name="Add character").click()
    expect(page.locator(".message")).to_contain_text("Added Benjamin; tagged on 0 pages")
    page.get_by_role("button", name="Draw character sheet").click()
    sheet = page.get_by_role("img", name="Reference picture of Benjamin")
    expect(sheet).to_be_visible(timeout=30_000)  # the list polls until the worker drew it
    expect(page.get_by_role("button", name="Redraw")).to_be_visible()
    screenshot(page, "characters-sheet-drawn")
    benjamin = Character.objects.get()
    assert benjamin.reference.source == "drawn"
    assert SheetJob.objects.get().attempts.get().outcome == "success"

    page.goto(f"{server.url}/projects/{project.pk}/")
    pages = list(project.pages.order_by("number")[:2])
    for tagged in pages:
        card = page.locator(f"#page-{tagged.pk}")
        card_action(card, "link", "Edit prompt").click()
        panel = page.locator("#panel")
        panel.get_by_label("Benjamin").check()
        panel.get_by_role("button", name="Save", exact=True).click()
        expect(card.locator(".chip")).to_have_text(re.compile("Reference changed"))
    expect(page.locator(".card--outdated")).to_have_count(2)
    screenshot(page, "characters-reference-changed")

    for tagged in pages:
        page.locator(f"#page-{tagged.pk}").get_by_role("button", name="Regenerate").click()
    # Page 3 kept its picture from the first run: it reads Complete like the two redrawn.
    expect(page.locator(".card--complete")).to_have_count(3, timeout=30_000)
    expect(page.locator(".card--outdated")).to_have_count(0)

    sent = {
        job.page.number: [(e["name"], e["reference"]) for e in job.references_sent]
        for job in Illustration.objects.filter(page__project=project, status="complete")
    }
    assert sent == {1: [("Benjamin", benjamin.reference_id)], 2: sent[1], 3: []}
    card_action(page.locator(f"#page-{pages[0].pk}"), "link", "History").click()
    expect(page.locator("#panel .history-references img").first).to_have_attribute(
        "alt", f"Benjamin (version {benjamin.reference_id})"
    )
