"""The page editor and sections in a real browser: drag a page to a new place, move one
with Alt+↑/↓ on its handle, keep the scroll position, and see the review page grouped by
section, generating one section with real workers."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot, sign_in
from tests.conftest import openai_env, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def order_of(project) -> list[int]:
    return list(project.pages.order_by("number").values_list("pk", flat=True))


def row(page, pk: int):
    return page.locator(f"#edit-page-{pk}")


def test_an_editor_drags_a_page_to_a_new_place(page, web_server, make_project):
    project = make_project(pages=4, title="Drag Book")
    one, two, three, four = order_of(project)
    server = web_server()
    sign_in(page, server, next_url=f"/projects/{project.pk}/pages/")

    row(page, one).locator("[data-drag-handle]").drag_to(row(page, three))

    expect(page.locator("#reorder-status")).to_have_text("Page moved to position 3 of 4.")
    wait_until(lambda: order_of(project) == [two, three, one, four], timeout=10)
    expect(row(page, one).locator("[data-page-number]")).to_have_text("3")
    expect(row(page, two).locator("[data-page-number]")).to_have_text("1")
    expect(row(page, two).get_by_role("button", name="Move page 1 up")).to_be_disabled()
    screenshot(page, "page-editor-dragged")
    page.reload()  # the server has the new order
    numbers = page.locator("li[data-page-id]").evaluate_all(
        "rows => rows.map(r => Number(r.dataset.pageId))"
    )
    assert numbers == [two, three, one, four]


def test_an_editor_moves_a_page_with_the_keyboard(page, web_server, make_project):
    project = make_project(pages=4, title="Keyboard Book")
    one, two, three, four = order_of(project)
    server = web_server()
    sign_in(page, server, next_url=f"/projects/{project.pk}/pages/")

    expect(row(page, three).get_by_role("button", name="Move page 3", exact=True)).to_be_visible()
    handle = row(page, three).locator("[data-drag-handle]")  # its name follows its place
    handle.focus()
    page.keyboard.press("Alt+ArrowUp")
    expect(page.locator("#reorder-status")).to_have_text("Page moved to position 2 of 4.")
    page.keyboard.press("Alt+ArrowUp")  # the handle keeps the focus
    expect(page.locator("#reorder-status")).to_have_text("Page moved to position 1 of 4.")
    expect(handle).to_be_focused()
    expect(handle).to_have_attribute("aria-label", "Move page 1")
    wait_until(lambda: order_of(project) == [three, one, two, four], timeout=10)

    page.keyboard.press("Alt+ArrowDown")
    expect(page.locator("#reorder-status")).to_have_text("Page moved to position 2 of 4.")
    wait_until(lambda: order_of(project) == [one, three, two, four], timeout=10)


def test_the_move_buttons_keep_the_scroll_position(page, web_server, make_project):
    project = make_project(pages=30, title="Long Book")
    pages = order_of(project)
    server = web_server()
    sign_in(page, server, next_url=f"/projects/{project.pk}/pages/")

    target = row(page, pages[19])
    target.scroll_into_view_if_needed()
    before = page.evaluate("window.scrollY")
    assert before > 0
    target.get_by_role("button", name="Move page 20 down").click()

    expect(row(page, pages[19]).locator("[data-page-number]")).to_have_text("21")
    wait_until(lambda: page.evaluate("window.scrollY") == before, timeout=10)
    expect(row(page, pages[19])).to_be_in_viewport()


def test_the_review_page_groups_pages_by_section_and_generates_one_section(
    page, web_server, qcluster, fake_openai, make_project
):
    project = make_project(pages=5, title="Chapter Book")
    for number, section in enumerate(["Chapter 1", "Chapter 1", "Chapter 2", "Chapter 2"], 1):
        project.pages.filter(number=number).update(section=section)
    project.pages.filter(number=5).update(section="Chapter 3")
    env = openai_env(fake_openai, STUDIO_WORKERS=2)
    qcluster(**env)
    server = web_server(**env)
    sign_in(page, server, next_url=f"/projects/{project.pk}/")

    headings = page.locator(".section-head__title")
    expect(headings).to_have_text(["Chapter 1", "Chapter 2", "Chapter 3"])
    chapter_two = page.locator(".section-head", has=page.get_by_role("heading", name="Chapter 2"))
    expect(chapter_two).to_contain_text("0 of 2 illustrated")

    chapter_two.get_by_role("button", name=re.compile(r"Generate missing in this section")).click()

    expect(page.locator(".toast")).to_contain_text("Queued 2 illustrations in “Chapter 2”.")
    expect(chapter_two).to_contain_text("2 of 2 illustrated", timeout=30_000)
    expect(chapter_two.get_by_role("button")).to_have_count(0)  # nothing missing there
    expect(page.locator(".card--complete")).to_have_count(2)
    chapter_one = page.locator(".section-head", has=page.get_by_role("heading", name="Chapter 1"))
    expect(chapter_one).to_contain_text("0 of 2 illustrated")
    expect(chapter_one.get_by_role("button")).to_have_text("Generate missing in this section (2)")
    assert fake_openai.successes == 2
    screenshot(page, "review-sections")


def test_the_manuscript_preview_scrolls_into_view_with_sections_and_paragraphs(
    page, web_server, editor
):
    server = web_server()
    sign_in(page, server, next_url="/projects/new/")
    page.get_by_label("Title").fill("River Fox")
    page.get_by_label("Manuscript").fill(
        "The fox woke.\n---\n## Chapter 1\nThe fox ran.\n\nIt was cold.\n---\nThe fox swam."
    )
    page.get_by_role("button", name="Preview pages").click()

    preview = page.get_by_role("heading", name="3 pages")
    expect(preview).to_be_in_viewport()
    expect(page.locator(".preview-list__section")).to_have_text("Section: Chapter 1")
    expect(page.locator(".preview-list__text").nth(1).locator("p")).to_have_text(
        ["The fox ran.", "It was cold."]
    )
