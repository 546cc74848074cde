"""The review page as a screen for looking at pictures, in a real browser with real workers:
filters with counts, the size slider, the drawer and the book preview (the gallery's tests
are test_gallery.py's)."""

import os
import re
import shutil

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from studio.models import Project
from tests.browser.conftest import screenshot, sign_in
from tests.conftest import ARTIFACTS, ROOT, openai_env

pytestmark = pytest.mark.django_db(transaction=True)


def illustrate(page, count: int) -> None:
    """Press Generate Missing and wait until every page's card is complete."""
    page.get_by_role("button", name=re.compile("Generate Missing Illustrations")).click()
    expect(page.locator(".card--complete")).to_have_count(count, timeout=60_000)


def chip(page, key: str):
    return page.locator(f'[data-filter="{key}"]')


def card(page, project: Project, number: int):
    return page.locator(f"#page-{project.pages.get(number=number).pk}")


def turn(page, key: str) -> None:
    """Press a key on the book preview once its page (and its script) has loaded."""
    page.wait_for_load_state()
    page.keyboard.press(key)


def box(locator) -> dict:
    found = locator.bounding_box()
    assert found is not None
    return found


def test_the_filter_counts_follow_the_run_and_a_chip_shows_only_its_pages(
    page, web_server, qcluster, fake_openai, make_project
):
    project = make_project(pages=6, title="Filtered Book")
    fake_openai.rules.append(("meadow number 2.", "400_policy"))
    env = openai_env(fake_openai, STUDIO_WORKERS=2)
    qcluster(**env)
    server = web_server(**env)
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    expect(chip(page, "all")).to_have_text("All 6")
    expect(chip(page, "attention")).to_have_text("Needs attention 0")
    expect(chip(page, "outdated")).to_have_text("Out of date 0")

    chip(page, "attention").click()
    expect(page).to_have_url(re.compile(r"\?show=attention$"))
    expect(page.locator(".card:visible")).to_have_count(0)
    page.get_by_role("button", name=re.compile("Generate Missing Illustrations")).click()
    # The poll brings the refused page: its chip counts it and the filter shows it alone.
    expect(chip(page, "attention")).to_have_text("Needs attention 1", timeout=60_000)
    expect(page.locator(".card:visible")).to_have_count(1)
    expect(card(page, project, 2)).to_be_visible()
    expect(page.locator(".run-state")).to_contain_text("Run finished", timeout=60_000)

    chip(page, "all").click()
    expect(page.locator(".card:visible")).to_have_count(6)
    expect(page.locator(".card--complete")).to_have_count(5)
    # A new prompt for a drawn page makes its picture out of date, without a reload.
    fourth = card(page, project, 4)
    fourth.locator("summary").click()
    fourth.get_by_role("link", name="Edit prompt").click()
    page.locator("#panel").get_by_label("What to draw").fill("The fox asleep under a hedge.")
    page.locator("#panel").get_by_role("button", name="Save", exact=True).click()
    expect(chip(page, "outdated")).to_have_text("Out of date 1")
    chip(page, "outdated").click()
    expect(page.locator(".card:visible")).to_have_count(1)
    expect(fourth).to_be_visible()
    expect(chip(page, "all")).to_have_text("All 6")
    screenshot(page, "review-filter-outdated")


def test_the_size_slider_changes_the_grid_and_is_remembered(
    page, web_server, qcluster, make_project
):
    project = make_project(pages=8, title="Sized Book")
    qcluster(STUDIO_WORKERS=2)
    server = web_server()
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    illustrate(page, 8)
    slider = page.get_by_label("Picture size")
    first = page.locator(".card").first
    default = box(first)["width"]
    assert 220 <= default < 300  # the dense grid: five columns across 1280 px

    slider.focus()
    page.keyboard.press("End")  # the largest pictures
    expect(slider).to_have_value("480")
    assert box(first)["width"] >= 480
    assert box(page.locator(".card").nth(1))["y"] == box(first)["y"]  # still two a row

    page.reload()
    expect(slider).to_have_value("480")
    assert box(page.locator(".card").first)["width"] >= 480
    slider.focus()
    page.keyboard.press("Home")
    expect(slider).to_have_value("140")
    assert box(page.locator(".card").first)["width"] < default
    # Eight small cards a row: the last one's menu still opens inside the window.
    last = page.locator(".card").nth(7)
    assert box(last)["y"] == box(page.locator(".card").first)["y"]
    last.locator("summary").click()
    # The menu turns towards the left on its <details>' toggle event, a task after the click.
    items = last.locator(".card-menu__items")
    expect(items).to_have_class(re.compile(r"card-menu__items--end"))
    menu = box(items)
    assert menu["x"] >= 0 and menu["x"] + menu["width"] <= 1280


def test_an_open_card_menu_stays_open_when_the_poll_swaps_its_card(
    page, web_server, qcluster, fake_openai, make_project
):
    project = make_project(pages=2, title="Menus Kept Open")
    env = openai_env(fake_openai, STUDIO_WORKERS=2, STUDIO_PROVIDER_TIMEOUT=90)
    qcluster(**env)
    server = web_server(**env)
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    fake_openai.hold()  # both pictures stay in flight while the editor opens a menu
    page.get_by_role("button", name=re.compile("Generate Missing Illustrations")).click()
    first = card(page, project, 1)
    expect(first).to_have_class(re.compile(r"card--generating"), timeout=30_000)
    first.evaluate("card => { card.dataset.before = 'the swap'; }")
    first.locator("summary").focus()
    page.keyboard.press("Enter")  # a keyboard editor opens the menu
    menu = first.locator("details.card-menu")
    expect(menu).to_have_attribute("open", "")

    # The picture lands: the next poll swaps the card whole, with the menu's new items.
    fake_openai.release()
    expect(first).to_have_class(re.compile(r"card--complete"), timeout=30_000)
    expect(first).not_to_have_attribute("data-before", "the swap")  # a new element
    expect(menu).to_have_attribute("open", "")
    expect(first.get_by_role("button", name="Approve", exact=True)).to_be_visible()
    expect(first.locator("summary")).to_be_focused()

    # Choosing an item sends it and closes the menu.
    first.get_by_role("button", name="Approve", exact=True).click()
    expect(first.locator(".chip--approved")).to_have_text("★ Approved")
    expect(menu).not_to_have_attribute("open", "")


def test_panels_open_beside_their_card_and_as_a_bottom_sheet_on_phones(
    page, web_server, qcluster, fake_openai, make_project
):
    project = make_project(pages=8, title="Drawer Book")
    fake_openai.script.extend(["503", "503"])  # the history has rows with long messages
    env = openai_env(fake_openai, STUDIO_WORKERS=1)
    qcluster(**env)
    server = web_server(**env)
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    illustrate(page, 8)

    # By keyboard: the card's menu, then History.
    seventh = card(page, project, 7)
    seventh.locator("summary").focus()
    page.keyboard.press("Enter")
    history = seventh.get_by_role("link", name="History")
    expect(history).to_be_visible()
    history.focus()
    page.keyboard.press("Enter")
    drawer = page.locator("#panel")
    expect(drawer.get_by_role("heading", name="Page 7: history")).to_be_focused()
    beside(box(drawer), box(seventh), page.viewport_size)
    no_horizontal_scroll(drawer)
    screenshot(page, "drawer-1280")
    page.keyboard.press("Escape")
    expect(drawer).to_be_hidden()

    page.set_viewport_size({"width": 390, "height": 844})
    first = card(page, project, 1)  # the page the two 503s were for
    first.scroll_into_view_if_needed()
    first.locator("summary").click()
    first.get_by_role("link", name="History").click()
    expect(drawer.get_by_role("heading", name="Page 1: history")).to_be_visible()
    expect(drawer.locator(".history-table tbody tr")).to_have_count(3)
    sheet = box(drawer)
    assert (sheet["x"], sheet["width"]) == (0, 390)
    assert abs(sheet["y"] + sheet["height"] - 844) <= 1  # on the bottom edge
    assert sheet["y"] > 844 * 0.25  # a sheet, not a page
    assert box(first)["y"] < sheet["y"]  # the card that opened it is in view above it
    # Toasts leave the sheet alone: they come from the top while it is open.
    toasts = page.locator("#toasts").evaluate("(el) => el.getBoundingClientRect().bottom")
    assert toasts < sheet["y"]
    no_horizontal_scroll(drawer)
    page.screenshot(path=str(ARTIFACTS / "drawer-390.png"))
    drawer.get_by_role("button", name="Close").click()
    expect(drawer).to_be_hidden()


def beside(drawer: dict, card: dict, viewport: dict) -> None:
    """The drawer is level with the card, next to it (not over it), inside the window."""
    assert drawer["x"] >= card["x"] + card["width"] or drawer["x"] + drawer["width"] <= card["x"]
    gap = min(
        abs(drawer["x"] - card["x"] - card["width"]), abs(card["x"] - drawer["x"] - drawer["width"])
    )
    assert gap <= 24
    assert drawer["y"] < card["y"] + card["height"] and card["y"] < drawer["y"] + drawer["height"]
    assert drawer["x"] >= 0 and drawer["x"] + drawer["width"] <= viewport["width"]
    assert drawer["y"] >= 0 and drawer["y"] + drawer["height"] <= viewport["height"]


def no_horizontal_scroll(drawer) -> None:
    """The panel's tables wrap: nothing is wider than the drawer."""
    widths = drawer.evaluate("(el) => [el.scrollWidth, el.clientWidth]")
    assert widths[0] <= widths[1]


def test_the_book_preview_turns_its_spreads_with_the_arrow_keys(
    page, web_server, qcluster, fake_openai, make_project
):
    project = make_project(pages=5, title="Turning Book")
    project.trim = "a4"  # a tall trim: a page's picture above its text, two pages a spread
    project.save()
    fake_openai.rules.append(("meadow number 3.", "400_policy"))
    env = openai_env(fake_openai, STUDIO_WORKERS=2)
    qcluster(**env)
    server = web_server(**env)
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    illustrate(page, 4)
    page.get_by_role("link", name="Book preview").first.click()

    where = page.locator(".book__where")
    expect(where).to_have_text("Spread 1 of 4 · title page")  # page 1 is a right-hand page
    turn(page, "ArrowRight")
    expect(where).to_have_text("Spread 2 of 4 · pages 1–2")
    expect(page.locator(".sheet__picture")).to_have_count(2)
    turn(page, "ArrowRight")
    expect(where).to_have_text("Spread 3 of 4 · pages 3–4")
    placeholder = page.locator(".sheet--missing")
    expect(placeholder).to_have_count(1)
    expect(placeholder).to_contain_text("No illustration yet: the last try failed")
    expect(placeholder).to_have_attribute("data-page", "3")
    turn(page, "ArrowRight")
    expect(where).to_have_text("Spread 4 of 4 · page 5")
    expect(page.locator(".sheet--absent")).to_have_count(1)
    expect(page.locator('[data-book-turn="next"]')).to_have_count(0)  # the last spread
    turn(page, "ArrowLeft")
    expect(where).to_have_text("Spread 3 of 4 · pages 3–4")
    expect(page).to_have_url(re.compile(r"\?spread=3&trim=a4$"))

    page.goto(f"{server.url}/projects/{project.pk}/export/")
    page.get_by_role("link", name="Book preview").click()
    expect(where).to_have_text("Spread 1 of 4 · title page")


def test_the_readme_pictures_of_the_demo_book(page, web_server, qcluster, django_user_model):
    """Screenshots of the demo book with its pictures: the review page at 1280 px, the book
    preview, the gallery, a print spread with its trim, bleed and safe area, and the phone
    drawer. STUDIO_UPDATE_DOCS=1 copies them into docs/."""
    call_command("seed_demo")
    project = Project.objects.get(title="The Tale of Peter Rabbit")
    qcluster(STUDIO_WORKERS=4)
    server = web_server()
    sign_in(page, server, username="editor", password="picturebook", next_url="/")
    page.get_by_role("link", name="The Tale of Peter Rabbit").click()
    illustrate(page, 24)
    expect(page.locator("#connection")).to_be_hidden()
    expect(page.locator(".toast")).to_have_count(0)  # "Queued 24 illustrations." is gone
    shots = {}
    shots["review.png"] = ARTIFACTS / "docs-review.png"
    page.screenshot(path=str(shots["review.png"]))

    # The gallery on page 3, drawn twice: its two versions side by side, its text beside.
    third = card(page, project, 3)
    third.locator("a[data-gallery]").click()
    gallery = page.locator("#gallery")
    expect(gallery.locator("#gallery-status")).to_have_text("Page 3 of 24, not approved")
    page.keyboard.press("r")
    expect(gallery.locator(".gallery__image")).to_have_count(2, timeout=30_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.gallery__image')]"
        ".every((picture) => picture.complete && picture.naturalWidth)"
    )
    expect(gallery.locator("[data-gallery-toast]")).to_be_hidden(timeout=10_000)
    shots["gallery.png"] = ARTIFACTS / "docs-gallery.png"
    page.screenshot(path=str(shots["gallery.png"]))
    page.keyboard.press("Escape")

    page.get_by_role("link", name="Book preview").first.click()
    expect(page.locator(".book__where")).to_have_text("Spread 1 of 26 · title page")
    turn(page, "ArrowRight")
    expect(page.locator(".book__where")).to_have_text("Spread 2 of 26 · page 1")
    turn(page, "ArrowRight")
    expect(page.locator(".book__where")).to_have_text("Spread 3 of 26 · page 2")
    page.wait_for_load_state("load")  # the pictures of the page's SVG delay its load event
    shots["book-preview.png"] = ARTIFACTS / "docs-book-preview.png"
    page.screenshot(path=str(shots["book-preview.png"]))
    page.get_by_role("link", name="Show trim, bleed and safe area").click()
    expect(page.locator(".guide--trim")).to_have_count(2)
    page.wait_for_load_state("load")
    shots["print-spread.png"] = ARTIFACTS / "docs-print-spread.png"
    page.screenshot(path=str(shots["print-spread.png"]))

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{server.url}/projects/{project.pk}/")
    third = card(page, project, 3)
    third.scroll_into_view_if_needed()
    third.locator("summary").click()
    third.get_by_role("link", name="History").click()
    expect(page.locator("#panel").get_by_role("heading", name="Page 3: history")).to_be_visible()
    shots["phone-drawer.png"] = ARTIFACTS / "docs-phone-drawer.png"
    page.screenshot(path=str(shots["phone-drawer.png"]))
    if os.environ.get("STUDIO_UPDATE_DOCS"):
        for name, path in shots.items():
            shutil.copyfile(path, ROOT / "docs" / name)
