"""A review tab keeps polling through 204 answers while nothing changes, and picks up the
next change as soon as it happens; a big book is read one window of cards at a time."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot, sign_in
from tests.conftest import openai_env, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_tab_stays_live_through_quiet_polls_and_then_picks_up_the_change(
    page, web_server, qcluster, fake_openai, make_project
):
    project = make_project(pages=3, title="Quiet Book")
    # The held call must not time out while the tab watches.
    env = openai_env(fake_openai, STUDIO_WORKERS=1, STUDIO_PROVIDER_TIMEOUT=60)
    qcluster(**env)
    server = web_server(**env)
    polls = []
    page.on(
        "response",
        lambda response: polls.append(response.status) if "/poll/" in response.url else None,
    )

    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    fake_openai.hold()  # the one worker's call waits: nothing changes meanwhile
    page.get_by_role("button", name=re.compile("Generate Missing Illustrations")).click()
    wait_until(lambda: fake_openai.in_flight == 1, timeout=30)
    expect(page.locator(".chip--generating")).to_have_count(1)
    # While the call waits, the tab's polls find the project at the version it shows.
    for _ in range(3):
        with page.expect_response(lambda r: "/poll/" in r.url and r.status == 204):
            pass
    expect(page.locator("#connection")).to_have_text("● Live")
    expect(page.locator(".card--complete")).to_have_count(0)

    fake_openai.release()
    expect(page.locator(".card--complete")).to_have_count(3, timeout=30_000)
    expect(page.locator(".progress-text")).to_contain_text("3 of 3 illustrated")
    expect(page).to_have_title(re.compile(r"3/3 · Quiet Book"))
    # A changed poll (200, or 286 once nothing is active) came after the quiet ones.
    assert {200, 286} & set(polls[polls.index(204) :])


def test_a_big_book_is_read_window_by_window(page, web_server, make_project):
    project = make_project(pages=250, title="Storyboard")
    project.pages.filter(number__gt=120).update(section="Act Two")
    server = web_server()

    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    expect(page.locator(".window-nav")).to_contain_text("Showing pages 1–50 of 250")
    expect(page.locator("article.card")).to_have_count(50)
    expect(page.locator('[data-filter="all"] .filter-chip__count')).to_have_text("250")
    screenshot(page, "big-book-window")

    page.locator(".window-nav").get_by_role("link", name="101–150").click()
    expect(page.locator(".window-nav")).to_contain_text("Showing pages 101–150 of 250")
    expect(page.locator("article.card")).to_have_count(50)
    # The window opens inside the first section, then Act Two begins at page 121.
    expect(page.locator(".section-head__title")).to_have_text(
        ["Pages before the first section", "Act Two"]
    )
    expect(page.locator('[data-filter="all"] .filter-chip__count')).to_have_text("250")

    page.locator(".window-nav").get_by_role("link", name="Act Two").click()
    expect(page).to_have_url(re.compile(r"start=100#section-2$"))
