"""Small layout faults an editor met (issue 34, item 4), measured in a real browser: a long
page label, the chips at the smallest picture size, the settings' checkbox and the phone's
header. The pictures are drawn in this process by the offline renderer before the server
starts: no worker is needed to look at them."""

import pytest
from playwright.sync_api import expect

from generation import services
from studio.models import Page
from tests.browser.conftest import screenshot, sign_in

pytestmark = pytest.mark.django_db(transaction=True)

LABEL = "The long walk home through Mr. McGregor's garden past the pond and a cat at dusk"


def box(locator) -> dict:
    found = locator.bounding_box()
    assert found is not None
    return found


@pytest.fixture
def book(make_project, drain):
    """Six pages drawn by the offline renderer; page 1 has an 80-character label, page 2 a
    new prompt (its chip reads "Prompt changed")."""
    project = make_project(pages=6, title="Measured Book")
    assert len(LABEL) == 80
    Page.objects.filter(project=project, number=1).update(label=LABEL)
    drain(services.generate_missing(project=project).run.pk)
    Page.objects.filter(project=project, number=2).update(prompt="The fox asleep by a hedge.")
    return project


def test_a_long_label_and_every_chip_stay_inside_their_card_at_every_picture_size(
    page, web_server, book
):
    server = web_server()
    sign_in(page, server, next_url=f"/projects/{book.pk}/")
    first, second = page.locator(".card").nth(0), page.locator(".card").nth(1)
    label = first.locator(".card__label")
    slider = page.get_by_label("Picture size")
    expect(slider).to_be_visible()
    for key in ("Home", "End"):  # 140 px, then 480 px
        slider.focus()
        page.keyboard.press(key)
        card, words = box(first), box(label)
        assert words["x"] + words["width"] <= card["x"] + card["width"]
        assert box(first.locator(".card__body"))["width"] <= card["width"]
        if box(second)["y"] == card["y"]:  # the next card, beside it, starts after it
            assert box(second)["x"] >= card["x"] + card["width"]
        # Every chip shows all its words (none cut to "Prompt cha…") inside its card.
        chips = page.locator(".card .chip")
        assert chips.count() == 6
        for n in range(chips.count()):
            chip = chips.nth(n)
            cut = chip.evaluate("chip => chip.scrollWidth > chip.clientWidth + 1")
            assert not cut, (key, chip.inner_text())
            owner = box(chip.locator("xpath=ancestor::article"))
            shown = box(chip)
            assert shown["x"] + shown["width"] <= owner["x"] + owner["width"], key
        changed = page.locator(f"#page-{book.pages.get(number=2).pk} .chip")
        expect(changed).to_contain_text("Prompt changed")
        screenshot(page, f"small-layouts-{key.lower()}")
    expect(label).to_have_attribute("title", LABEL)  # the whole label, when it is clamped


def test_the_email_checkbox_sits_beside_its_label(page, web_server, editor):
    server = web_server()
    sign_in(page, server, next_url="/settings/")
    box_ = box(page.get_by_role("checkbox", name="Email me when a run ends"))
    words = box(page.locator("label[for=id_email_on_run_end]"))
    # On the label's line, just before its words.
    assert abs((box_["y"] + box_["height"] / 2) - (words["y"] + words["height"] / 2)) <= 4
    assert 0 <= words["x"] - (box_["x"] + box_["width"]) <= 16
    page.get_by_label("Email address").fill("alice@example.org")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".message")).to_contain_text("Settings saved.")
    expect(page.get_by_label("Email address")).to_have_value("alice@example.org")
    screenshot(page, "small-layouts-settings")


def test_on_a_phone_the_first_picture_is_in_the_first_screen(page, web_server, book):
    server = web_server()
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, server, next_url=f"/projects/{book.pk}/")
    picture = box(page.locator(".card").first.locator(".card__image img"))
    assert picture["y"] + picture["height"] <= 844, picture
    # Nothing is lost on the way: the header's controls and lines are still on the page.
    expect(page.get_by_role("button", name="Approve all (6)")).to_be_attached()
    expect(page.locator(".progress-text")).to_contain_text("6 of 6 illustrated")
    screenshot(page, "small-layouts-phone")
