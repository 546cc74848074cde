"""A tab follows its book wherever the change was made: a tab left idle before a run started
elsewhere shows it within 15 s (header and cards together), and asks at once when it gets
the focus."""

import pytest
from playwright.sync_api import expect

from generation import services
from tests.browser.conftest import screenshot, sign_in

pytestmark = pytest.mark.django_db(transaction=True)


def is_poll(response, status: int | None = None) -> bool:
    return "/poll/" in response.url and (status is None or response.status == status)


def test_an_idle_tab_shows_a_run_started_elsewhere_and_asks_at_once_on_focus(
    page, web_server, make_project
):
    project = make_project(pages=3, title="Idle Tab")
    server = web_server()
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    expect(page.locator(".run-state")).to_contain_text("Not started")
    # Nothing happens: the tab still asks, and hears "nothing changed".
    for _ in range(2):
        with page.expect_response(lambda r: is_poll(r, 204), timeout=15_000):
            pass

    # Started from elsewhere (another tab, a command, the admin): the ORM, here.
    services.generate_missing(project=project)
    expect(page.locator(".run-state")).to_contain_text("Run running", timeout=15_000)
    expect(page.locator(".chip--queued")).to_have_count(3)
    expect(page.locator(".on-its-way")).to_have_text("3 pictures on their way")
    screenshot(page, "idle-tab-follows")

    services.stop(project=project)  # no worker: the queue is canceled, the book idle again
    expect(page.locator(".run-state")).to_contain_text("Run stopped", timeout=15_000)
    expect(page.locator(".chip--queued")).to_have_count(0)
    # Three quiet polls: the tab has backed off beyond the 2 s of a busy book.
    for _ in range(3):
        with page.expect_response(lambda r: is_poll(r, 204), timeout=15_000):
            pass
    services.generate_missing(project=project)
    page.evaluate("window.dispatchEvent(new Event('focus'))")
    expect(page.locator(".chip--queued")).to_have_count(3, timeout=2_000)
    expect(page.locator(".run-state")).to_contain_text("Run running")
