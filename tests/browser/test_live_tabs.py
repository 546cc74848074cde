"""A tab follows its book wherever the change was made: a tab left idle before a run started
elsewhere shows it within 15 s (header and cards together), asks at once when it gets the
focus, and Pause and Stop answer the click at once."""

import re

import pytest
from playwright.sync_api import expect

from generation import services
from studio.models import Project
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


def test_pause_and_stop_answer_the_click_at_once_and_the_answer_settles_them(
    page, web_server, make_project
):
    project = make_project(pages=3, title="Quick Controls")
    services.generate_missing(project=project)  # running: no worker takes its pages
    server = web_server()
    held = []  # the controls' requests, held on their way to the server
    page.route(
        re.compile(rf"/projects/{project.pk}/(pause|stop)/$"), lambda route: held.append(route)
    )
    sign_in(page, server, next_url=f"/projects/{project.pk}/")

    for control, busy, settled in (
        ("Pause", "Pausing…", "Run paused"),
        ("Stop", "Stopping…", "Run stopped"),
    ):
        page.get_by_role("button", name=control, exact=True).click()
        # The server has not answered yet: the control says what it is doing, disabled.
        pressed = page.get_by_role("button", name=busy, exact=True)
        expect(pressed).to_be_disabled()
        # A poll that comes back meanwhile with a change does not undo it.
        Project.objects.mark_changed(project.pk)
        with page.expect_response(lambda r: is_poll(r, 200), timeout=15_000):
            pass
        expect(pressed).to_be_disabled()
        assert len(held) == 1
        held.pop().continue_()
        expect(page.locator(".run-state")).to_contain_text(settled)
