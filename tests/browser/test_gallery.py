"""The gallery in a real browser: an editor chooses pictures by keyboard alone (with a screen
reader's dialog, focus and announcements) and by touch on a phone, and the review page
behind follows every choice. The pictures are drawn beforehand in this process by the
offline renderer; what the gallery queues waits in the queue (no worker runs)."""

import re

import pytest
from playwright.sync_api import expect

from generation import services
from generation.models import Illustration
from tests.browser.conftest import screenshot, sign_in
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.django_db(transaction=True)

Status = Illustration.Status


def current_pk(page_row) -> int:
    return page_row.illustrations.get(status=Status.COMPLETE).pk


def card(page, page_row):
    return page.locator(f"#page-{page_row.pk}")


def focus_inside(page) -> bool:
    return page.evaluate(
        "() => document.getElementById('gallery').contains(document.activeElement)"
    )


def test_an_editor_chooses_approves_and_redraws_by_keyboard_alone(
    page, web_server, make_project, drain
):
    project = make_project(pages=4, title="Keyboard Book")
    drain(services.generate_missing(project=project).run.pk)
    first, second, third, fourth = project.pages.order_by("number")
    earlier = current_pk(first)
    drain(services.queue_page(page=first, regenerate=True).run.pk)  # page 1 has two versions
    services.approve_page(page=third)
    server = web_server()
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    page.locator('[data-filter="unapproved"]').click()  # pages 1, 2 and 4

    card(page, first).locator("a[data-gallery]").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog", name="Page 1 of 4")).to_be_visible()
    gallery = page.locator("#gallery")
    expect(gallery.locator("#gallery-title")).to_be_focused()
    status = gallery.locator("#gallery-status")
    expect(status).to_have_text("Page 1 of 4, not approved")
    expect(gallery.locator(".gallery__where")).to_have_text("Not approved: 1 of 3")
    expect(gallery.locator(".gallery__image")).to_have_count(2)  # the versions side by side
    expect(gallery.locator(".gallery__text")).to_have_text(
        "Page 1: the fox crosses meadow number 1."
    )

    # 2 chooses the earlier version: saved at once, and the card behind shows it.
    page.keyboard.press("2")
    expect(gallery.locator("[data-gallery-toast]")).to_have_text(
        "Page 1 now shows the version you chose."
    )
    expect(card(page, first).locator(".card__image img")).to_have_attribute(
        "src", f"/images/{earlier}/thumbnail/"
    )
    expect(gallery.locator(".gallery__image").first).to_have_attribute("src", f"/images/{earlier}/")
    assert current_pk(first) == earlier
    screenshot(page, "gallery-versions")
    page.keyboard.press("1")  # the picture shown already: nothing to choose, and it says so
    expect(gallery.locator("[data-gallery-toast]")).to_have_text(
        "Picture 1 is not one to choose: Current picture · shown on the page."
    )

    page.keyboard.press("a")
    expect(status).to_have_text("Page 1 of 4, approved")
    expect(card(page, first).locator(".chip--approved")).to_have_text("★ Approved")

    # R on an approved page asks first, as the card does: No draws nothing, Yes queues it.
    jobs = Illustration.objects.count()
    page.once("dialog", lambda question: question.dismiss())
    page.keyboard.press("r")
    expect(gallery.locator('[data-gallery-key="r"]')).to_be_enabled()
    assert Illustration.objects.count() == jobs
    asked = []
    page.once("dialog", lambda question: (asked.append(question.message), question.accept()))
    page.keyboard.press("r")
    expect(card(page, first).locator(".chip").first).to_contain_text("Queued")
    assert asked == ["Page 1 is approved. Draw it again? The new picture will need approving."]
    assert Illustration.objects.count() == jobs + 1
    expect(gallery.locator('[data-gallery-key="r"]')).to_have_count(0)  # on its way now

    # ← → walk the pages the filter shows: 3 is approved, and now 1 is too.
    page.keyboard.press("ArrowRight")
    expect(status).to_have_text("Page 2 of 4, not approved")
    # One picture: as large as the window allows beside the text (1280 × 900 here).
    picture = gallery.locator(".gallery__image")
    expect(picture).to_have_count(1)
    assert min(picture.evaluate("(image) => [image.clientWidth, image.clientHeight]")) >= 720
    page.keyboard.press("ArrowRight")
    expect(status).to_have_text("Page 4 of 4, not approved")
    page.keyboard.press("ArrowRight")
    expect(status).to_have_text("Page 2 of 4, not approved")
    page.keyboard.press("ArrowLeft")
    expect(status).to_have_text("Page 4 of 4, not approved")

    # E opens the prompt beside the picture; keys typed there are the prompt's.
    page.keyboard.press("e")
    heading = gallery.get_by_role("heading", name="Page 4: what to draw")
    expect(heading).to_be_focused()
    gallery.get_by_label("What to draw").fill("")
    page.keyboard.type("A red fox")
    gallery.get_by_role("button", name="Save", exact=True).click()
    expect(gallery.locator("[data-gallery-toast]")).to_contain_text("Prompt of page 4 saved.")
    expect(heading).to_have_count(0)
    expect(gallery.locator('[data-gallery-key="e"]')).to_be_focused()
    expect(card(page, fourth).locator(".chip").first).to_have_text(re.compile("Prompt changed"))
    expect(status).to_have_text("Page 4 of 4, prompt changed, not approved")
    assert fourth.illustrations.filter(approved_at__isnull=False).count() == 0  # "a" was typed

    # ? lists every key; Tab never leaves the dialog; Esc closes the keys, then the gallery.
    page.keyboard.press("?")
    keys = gallery.locator("#gallery-help")
    expect(keys).to_be_visible()
    for words in (
        "Previous and next page",
        "Choose that version",
        "Approve",
        "Regenerate",
        "Edit the prompt",
        "Try variants",
        "Show or hide these keys",
        "Close these",
    ):
        expect(keys).to_contain_text(words)
    screenshot(page, "gallery-keys")
    page.keyboard.press("Escape")
    expect(keys).to_be_hidden()
    for _ in range(14):
        page.keyboard.press("Tab")
        assert focus_inside(page)
    page.keyboard.press("Shift+Tab")
    assert focus_inside(page)
    page.keyboard.press("Escape")
    expect(gallery).to_be_hidden()
    expect(card(page, fourth).locator("a[data-gallery]")).to_be_focused()


def swipe(page, cdp, *, start: tuple[int, int], end: tuple[int, int]) -> None:
    """A finger drawn across the screen: Chromium's own touch input, as a phone sends it."""
    steps = 6
    cdp.send(
        "Input.dispatchTouchEvent",
        {"type": "touchStart", "touchPoints": [{"x": start[0], "y": start[1]}]},
    )
    for n in range(1, steps + 1):
        x = start[0] + (end[0] - start[0]) * n / steps
        y = start[1] + (end[1] - start[1]) * n / steps
        cdp.send(
            "Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]}
        )
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def test_on_a_phone_a_swipe_turns_the_page_and_the_actions_are_in_reach(
    browser, web_server, make_project, drain
):
    project = make_project(pages=3, title="Phone Book")
    drain(services.generate_missing(project=project).run.pk)
    server = web_server()
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        sign_in(page, server, next_url=f"/projects/{project.pk}/")
        first = project.pages.get(number=1)
        card(page, first).locator("a[data-gallery]").tap()
        expect(page.get_by_role("dialog", name="Page 1 of 3")).to_be_visible()
        gallery = page.locator("#gallery")
        picture = gallery.locator(".gallery__image")
        page.wait_for_function(
            "() => { const p = document.querySelector('.gallery__image');"
            " return p && p.complete && p.naturalWidth > 0; }"
        )
        shape = picture.bounding_box()
        assert shape["width"] >= 388 and shape["x"] <= 1  # the picture fills the width
        actions = gallery.locator(".gallery__actions").bounding_box()
        assert abs(actions["y"] + actions["height"] - 844) <= 1  # on the bottom edge
        assert (
            gallery.get_by_role("button", name=re.compile("^Approve")).bounding_box()["y"]
            > 844 * 0.8
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "gallery-390.png"))

        # A thumb's tap approves; the card behind follows.
        gallery.get_by_role("button", name=re.compile("^Approve")).tap()
        expect(card(page, first).locator(".chip--approved")).to_have_text("★ Approved")
        assert first.illustrations.filter(approved_at__isnull=False).count() == 1

        cdp = page.context.new_cdp_session(page)
        middle = shape["y"] + min(shape["height"], 300) / 2
        swipe(page, cdp, start=(200, middle + 120), end=(210, middle - 60))  # a scroll
        swipe(page, cdp, start=(320, middle), end=(60, middle + 10))
        expect(page.get_by_role("dialog", name="Page 2 of 3")).to_be_visible()
        swipe(page, cdp, start=(60, middle), end=(330, middle))
        expect(page.get_by_role("dialog", name="Page 1 of 3")).to_be_visible()
        expect(gallery.locator("#gallery-status")).to_have_text("Page 1 of 3, approved")
        assert errors == []
    finally:
        context.close()


def test_back_closes_the_gallery_and_forward_opens_it_again_where_it_was(
    page, web_server, make_project, drain
):
    project = make_project(pages=3, title="History Book")
    drain(services.generate_missing(project=project).run.pk)
    first, second, _ = project.pages.order_by("number")
    server = web_server()
    review = f"{server.url}/projects/{project.pk}/"
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    expect(card(page, first)).to_be_visible()
    page.evaluate("() => { window.sameDocument = true; }")  # gone if the page is left
    entries = page.evaluate("() => history.length")
    gallery = page.locator("#gallery")
    status = gallery.locator("#gallery-status")

    # Opening adds one entry, at the gallery's own address; walking pages replaces it.
    card(page, first).locator("a[data-gallery]").click()
    expect(status).to_have_text("Page 1 of 3, not approved")
    expect(page).to_have_url(f"{server.url}/projects/{project.pk}/gallery/{first.pk}/")
    page.keyboard.press("ArrowRight")
    expect(status).to_have_text("Page 2 of 3, not approved")
    expect(page).to_have_url(f"{server.url}/projects/{project.pk}/gallery/{second.pk}/")
    assert page.evaluate("() => history.length") == entries + 1

    # Back closes the gallery and stays on the review page, focus on the page shown last.
    page.go_back()
    expect(gallery).to_be_hidden()
    expect(page).to_have_url(review)
    assert page.evaluate("() => window.sameDocument") is True
    expect(card(page, second).locator("a[data-gallery]")).to_be_focused()

    # Forward opens it again at that page.
    page.go_forward()
    expect(page.get_by_role("dialog", name="Page 2 of 3")).to_be_visible()
    expect(status).to_have_text("Page 2 of 3, not approved")
    expect(page).to_have_url(f"{server.url}/projects/{project.pk}/gallery/{second.pk}/")

    # Esc closes it as Back would: the next Back leaves the project, not a closed gallery.
    page.keyboard.press("Escape")
    expect(gallery).to_be_hidden()
    expect(page).to_have_url(review)
    assert page.evaluate("() => window.sameDocument") is True
    card(page, first).locator("a[data-gallery]").click()  # opened again: one entry again
    expect(status).to_have_text("Page 1 of 3, not approved")
    gallery.locator("[data-gallery-close]").first.click()
    expect(gallery).to_be_hidden()
    expect(page).to_have_url(review)
    assert page.evaluate("() => history.length") == entries + 1
    page.go_back()
    expect(page).not_to_have_url(review)
    expect(gallery).to_have_count(0)
