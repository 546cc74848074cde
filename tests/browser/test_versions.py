"""An editor in a real browser, with real workers: goes back to an earlier version, tries
variants and picks one, approves the book page by page and all at once."""

import re

import pytest
from playwright.sync_api import expect

from generation.models import Illustration
from tests.browser.conftest import card_action, screenshot, sign_in
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

Status = Illustration.Status


def current_pk(page_row) -> int | None:
    return (
        Illustration.objects.filter(page=page_row, status=Status.COMPLETE)
        .values_list("pk", flat=True)
        .first()
    )


def card(page, page_row):
    return page.locator(f"#page-{page_row.pk}")


def thumbnail_of(pk: int) -> re.Pattern:
    return re.compile(rf"/images/{pk}/thumbnail/$")


def generate_all(page, count: int) -> None:
    page.get_by_role("button", name=re.compile("Generate Missing Illustrations")).click()
    expect(page.locator(".card--complete")).to_have_count(count, timeout=30_000)


def test_an_editor_uses_an_earlier_version_of_a_picture(page, web_server, qcluster, make_project):
    project = make_project(pages=2, title="Two Versions")
    qcluster(STUDIO_WORKERS=2)
    server = web_server()
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    generate_all(page, 2)
    first_page = project.pages.get(number=1)
    first = current_pk(first_page)

    card_action(card(page, first_page), "button", "Regenerate").click()
    wait_until(lambda: current_pk(first_page) not in (None, first), timeout=30)
    second = current_pk(first_page)
    expect(card(page, first_page).locator(".card__image img")).to_have_attribute(
        "src", thumbnail_of(second), timeout=15_000
    )

    card_action(card(page, first_page), "link", "History").click()
    panel = page.locator("#panel")
    expect(panel.locator(".versions__title").first).to_have_text("Versions of the picture (2)")
    expect(panel.locator(".version--current img")).to_have_attribute("src", thumbnail_of(second))
    expect(panel.get_by_text(re.compile(r"Made \d{4}-\d\d-\d\d .* · embedded"))).to_have_count(2)
    screenshot(page, "versions-history")
    panel.get_by_role("button", name="Use this version").click()

    expect(page.locator(".toast").last).to_contain_text("Page 1 now shows the version you chose.")
    expect(card(page, first_page).locator(".card__image img")).to_have_attribute(
        "src", thumbnail_of(first)
    )
    # The open panel follows: the chosen one is now the current picture.
    expect(panel.locator(".version--current img")).to_have_attribute("src", thumbnail_of(first))
    assert current_pk(first_page) == first
    assert Illustration.objects.filter(page=first_page, status=Status.REPLACED).get().pk == second


def test_an_editor_tries_three_variants_and_picks_one(page, web_server, qcluster, make_project):
    project = make_project(pages=2, title="Variants")
    qcluster(STUDIO_WORKERS=3)
    server = web_server()
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    generate_all(page, 2)
    page_row = project.pages.get(number=2)
    before = current_pk(page_row)

    card_action(card(page, page_row), "link", "Try variants").click()
    panel = page.locator("#panel")
    expect(panel.get_by_role("radio", name="3 variants ≈ $0.00")).to_be_checked()
    panel.get_by_role("button", name="Try variants").click()
    expect(page.locator(".toast").last).to_contain_text("Trying 3 variants of page 2.")

    # The panel shows the candidates side by side as the workers finish them.
    expect(panel.locator("img[alt^='Variant']")).to_have_count(3, timeout=30_000)
    expect(panel.locator("img[alt='Current picture of page 2']")).to_be_visible()
    assert current_pk(page_row) == before  # the page's picture stayed meanwhile
    expect(card(page, page_row).get_by_role("link", name="Choose a variant")).to_be_visible()
    screenshot(page, "variants-side-by-side")

    variant_2 = Illustration.objects.get(page=page_row, variant=2, candidate=True)
    panel.get_by_role("button", name="Use variant 2").click()
    expect(page.locator(".toast").last).to_contain_text("Page 2 now shows the version you chose.")
    expect(card(page, page_row).locator(".card__image img")).to_have_attribute(
        "src", thumbnail_of(variant_2.pk)
    )
    expect(card_action(card(page, page_row), "link", "Try variants")).to_be_visible()
    assert current_pk(page_row) == variant_2.pk
    kept = Illustration.objects.filter(page=page_row, status=Status.REPLACED)
    assert sorted(kept.values_list("variant", flat=True)) == [0, 1, 3]
    assert not Illustration.objects.filter(page=page_row, candidate=True).exists()


def test_an_editor_approves_a_page_then_the_whole_book(page, web_server, qcluster, make_project):
    project = make_project(pages=4, title="Approvals")
    qcluster(STUDIO_WORKERS=2)
    server = web_server()
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    header = page.locator(".approval-progress")
    expect(header).to_have_text("0 of 4 approved")
    generate_all(page, 4)
    expect(header).to_contain_text("0 of 4 approved · 4 pictures to review")

    first_page = project.pages.get(number=1)
    card_action(card(page, first_page), "button", "Approve").click()
    expect(header).to_contain_text("1 of 4 approved")
    expect(card(page, first_page).locator(".chip--approved")).to_have_text("★ Approved")

    page.get_by_role("button", name="Approve all (3)").click()
    expect(page.locator(".toast").last).to_contain_text("Approved 3 pages.")
    expect(header).to_have_text("4 of 4 approved")
    expect(page.locator(".chip--approved")).to_have_count(4)
    expect(page.get_by_role("button", name=re.compile("Approve all"))).to_have_count(0)
    screenshot(page, "approved-all")

    # A new picture is not approved: the count drops when it lands.
    # Redrawing an approved page asks first, one page at a time.
    second_page = project.pages.get(number=2)
    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.accept()))
    card_action(card(page, second_page), "button", "Regenerate").click()
    expect(header).to_contain_text("3 of 4 approved", timeout=30_000)
    expect(page.locator(".chip--approved")).to_have_count(3)
    assert questions == ["Page 2 is approved. Draw it again? The new picture will need approving."]
