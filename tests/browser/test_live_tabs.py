"""A tab follows its book wherever the change was made: a tab left idle before a run started
elsewhere shows it within 15 s (header and cards together), asks at once when it gets the
focus, and Pause and Stop answer the click at once."""

import os
import re
import signal

import pytest
from playwright.sync_api import expect

from generation import services
from studio.models import Project
from tests.browser.conftest import screenshot, sign_in
from tests.conftest import charges_and_entries, wait_until

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


def test_a_tab_open_when_its_cluster_is_killed_shows_the_silent_worker_then_new_pictures(
    page, web_server, make_project, qcluster, fake_openai
):
    """In Chromium, no reload: after kill -9 no card says Generating once the workers have
    been silent for three beats and the tab's next busy poll (2 s) has come (at the default
    5 s beats: 17 s after the last beat, within the issue's 20 s), and a new cluster's
    pictures show in the same tab, each page paid once."""
    from datetime import timedelta

    from generation.clock import db_now
    from generation.models import Illustration
    from tests.conftest import openai_env

    beat = 1.0
    project = make_project(pages=2, title="Killed In Sight")
    env = openai_env(
        fake_openai, STUDIO_WORKERS=2, STUDIO_HEARTBEAT_SECONDS=beat, STUDIO_PROVIDER_TIMEOUT=60
    )
    fake_openai.hold()  # both calls in flight while the cluster is killed
    doomed = qcluster(**env)
    services.generate_missing(project=project)
    server = web_server(STUDIO_HEARTBEAT_SECONDS=beat)
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    generating = page.locator('.chip[title^="Generating (attempt 1 of 3)"]')
    expect(generating).to_have_count(2, timeout=30_000)

    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=10)
    leases = Illustration.objects.filter(page__project=project).values_list(
        "lease_expires_at", flat=True
    )
    last_heard = max(leases) - timedelta(seconds=3 * beat)
    expect(page.locator('.chip[title^="Waiting for the worker (last heard "]')).to_have_count(
        2, timeout=15_000
    )
    seen_after = (db_now() - last_heard).total_seconds()
    expect(generating).to_have_count(0, timeout=1)
    assert seen_after <= 3 * beat + 2 + 1.5, seen_after  # three beats, one busy poll
    expect(page.locator(".on-its-way")).to_have_count(0)
    screenshot(page, "killed-cluster-waiting")

    fake_openai.release()  # the dead workers' answers go to closed sockets: charged, unread
    qcluster(**env)
    expect(page.locator(".chip--complete")).to_have_count(2, timeout=45_000)
    wait_until(lambda: fake_openai.in_flight == 0, timeout=10)
    charged, entered = charges_and_entries(fake_openai, project)
    assert charged == entered  # every charge once in the ledger, by its key
    assert len({c["idempotency_key"] for c in fake_openai.calls}) == 2  # one key a page
