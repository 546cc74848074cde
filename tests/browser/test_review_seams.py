"""Where the review page's pieces meet, in a real browser with real workers and the loopback
fake service: one primary button in the header through a whole run, regeneration and
approval; filter counts that follow the poll; History's versions and the variants form laid
out as they are meant to be."""

import re

import pytest
from playwright.sync_api import expect

from generation.models import Illustration
from tests.browser.conftest import card_action, screenshot, sign_in
from tests.conftest import openai_env, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def primary(page):
    return page.locator("#live-header .button--primary")


def chip(page, key: str):
    return page.locator(f'[data-filter="{key}"]')


def box(locator) -> dict:
    found = locator.bounding_box()
    assert found is not None
    return found


def test_the_header_offers_one_primary_button_the_next_useful_action_all_afternoon(
    page, web_server, qcluster, fake_openai, make_project
):
    project = make_project(pages=4, title="One Button")
    env = openai_env(fake_openai, STUDIO_WORKERS=2, STUDIO_PROVIDER_TIMEOUT=90)
    qcluster(**env)
    server = web_server(**env)
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    expect(primary(page)).to_have_count(1)
    expect(primary(page)).to_have_text(re.compile(r"^Generate Missing Illustrations \(4\)$"))
    # The four chips on one line at 1280 px, whatever their counts.
    chips = page.locator("[data-filter-bar] [data-filter]")
    expect(chips).to_have_count(4)
    tops = {round(box(one)["y"]) for one in chips.all()}
    assert len(tops) == 1

    fake_openai.hold()  # the calls stay in flight while the test looks
    page.get_by_role("button", name=re.compile("Generate Missing Illustrations")).click()
    wait_until(lambda: fake_openai.in_flight == 2, timeout=30)
    expect(primary(page)).to_have_text("Pause")
    expect(primary(page)).to_have_count(1)
    expect(page.locator(".on-its-way")).to_have_text("4 pictures on their way")
    expect(page.get_by_role("button", name=re.compile("Generate Missing"))).to_have_count(0)
    screenshot(page, "seams-running")
    fake_openai.release()

    # Done: approving the pictures is what is left to do.
    expect(page.locator(".card--complete")).to_have_count(4, timeout=30_000)
    expect(primary(page)).to_have_text(re.compile(r"^Approve all \(4\)$"))
    expect(chip(page, "unapproved")).to_have_text("Not approved 4")
    primary(page).click()
    expect(chip(page, "unapproved")).to_have_text("Not approved 0")
    expect(page.locator(".chip--approved")).to_have_count(4)
    expect(primary(page)).to_have_count(0)  # nothing left to do

    # Page 2 unapproved, then its prompt changed: Regenerate changed pages (1).
    second = page.locator(f"#page-{project.pages.get(number=2).pk}")
    card_action(second, "button", "Unapprove").click()
    expect(chip(page, "unapproved")).to_have_text("Not approved 1")
    card_action(second, "link", "Edit prompt").click()
    page.locator("#panel").get_by_label("What to draw").fill("The fox asleep under a hedge.")
    page.locator("#panel").get_by_role("button", name="Save", exact=True).click()
    expect(chip(page, "outdated")).to_have_text("Out of date 1")
    expect(primary(page)).to_have_text(re.compile(r"^Regenerate changed pages \(1\) ≈ \$"))

    fake_openai.hold()
    primary(page).click()
    wait_until(lambda: fake_openai.in_flight == 1, timeout=30)
    # On its way: not offered again, counted as on its way, and Pause is the one primary.
    expect(primary(page)).to_have_text("Pause")
    expect(primary(page)).to_have_count(1)
    expect(page.get_by_role("button", name=re.compile("Regenerate changed pages"))).to_have_count(0)
    expect(page.locator(".on-its-way")).to_have_text("1 picture on its way")
    expect(page.locator(".run-state")).to_contain_text("Run running")
    fake_openai.release()

    # The poll that brings the new picture moves the counts with it.
    expect(chip(page, "outdated")).to_have_text("Out of date 0", timeout=30_000)
    expect(chip(page, "unapproved")).to_have_text("Not approved 1")
    expect(chip(page, "all")).to_have_text("All 4")
    expect(primary(page)).to_have_text(re.compile(r"^Approve all \(1\)$"))


def test_history_shows_each_version_beside_its_words_and_the_variants_form_reads_as_a_list(
    page, web_server, qcluster, make_project
):
    project = make_project(pages=2, title="Versions Laid Out")
    qcluster(STUDIO_WORKERS=2)
    server = web_server()
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    page.get_by_role("button", name=re.compile("Generate Missing Illustrations")).click()
    expect(page.locator(".card--complete")).to_have_count(2, timeout=30_000)
    first = page.locator(f"#page-{project.pages.get(number=1).pk}")
    card_action(first, "button", "Regenerate").click()
    kept = Illustration.objects.filter(
        page__number=1, page__project=project, status__in=("complete", "replaced")
    )
    wait_until(lambda: kept.count() == 2, timeout=30)  # the new picture and the old one
    expect(page.locator("#connection")).to_be_hidden()  # the last poll has come back
    card_action(first, "link", "History").click()
    versions = page.locator("#panel .version")
    expect(versions).to_have_count(2, timeout=15_000)
    for version in versions.all():
        picture, words = box(version.locator("img")), box(version.locator(".version__about"))
        assert picture["width"] <= 100  # a thumbnail, not the characters page's 200 px
        assert picture["x"] + picture["width"] <= words["x"]  # beside its words, not over
        assert (
            box(version)["x"] + box(version)["width"]
            <= box(page.locator("#panel"))["x"] + (box(page.locator("#panel"))["width"])
        )
    current = page.locator("#panel .version--current")
    expect(current).to_have_css("border-top-color", "rgb(29, 122, 69)")  # var(--ok)
    screenshot(page, "seams-history-versions")
    page.keyboard.press("Escape")

    card_action(first, "link", "Try variants").click()
    choices = page.locator("#panel .variants-form__choice")
    expect(choices).to_have_count(4)
    for choice in choices.all():
        radio, label = box(choice.locator("input")), box(choice)
        assert radio["width"] < 30  # a radio button, not a 100 % wide input
        assert (
            label["y"] <= radio["y"]
            and radio["y"] + radio["height"] <= label["y"] + (label["height"])
        )  # on the line of its words
        expect(choice).to_have_css("font-weight", "400")
    screenshot(page, "seams-variants-form")


def test_a_filter_hides_the_sections_it_leaves_empty(
    page, web_server, qcluster, fake_openai, make_project
):
    project = make_project(pages=5, title="Chapters Filtered")
    for number, section in enumerate(["Chapter 1", "Chapter 1", "Chapter 2", "Chapter 2"], 1):
        project.pages.filter(number=number).update(section=section)
    project.pages.filter(number=5).update(section="Chapter 3")
    fake_openai.rules.append(("meadow number 3.", "400_policy"))
    env = openai_env(fake_openai, STUDIO_WORKERS=2)
    qcluster(**env)
    server = web_server(**env)
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    page.get_by_role("button", name=re.compile("Generate Missing Illustrations")).click()
    expect(page.locator(".run-state")).to_contain_text("Run finished", timeout=30_000)
    headings = page.locator(".section-head__title")

    chip(page, "attention").click()
    expect(page.locator(".card:visible")).to_have_count(1)
    expect(headings.filter(visible=True)).to_have_text(["Chapter 2"])
    page.reload()  # the same from the address (?show=attention)
    expect(page.locator(".card:visible")).to_have_count(1)
    expect(headings.filter(visible=True)).to_have_text(["Chapter 2"])
    chapter_two = page.locator(".section-head", has=page.get_by_role("heading", name="Chapter 2"))
    expect(chapter_two).to_contain_text("1 of 2 illustrated")

    chip(page, "all").click()
    expect(headings.filter(visible=True)).to_have_text(["Chapter 1", "Chapter 2", "Chapter 3"])
    expect(page.locator(".card:visible")).to_have_count(5)
