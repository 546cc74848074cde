"""Cards and header that never mislead, in a real browser with real workers and the
loopback fake service: a halted run's pages are held, a paused run's call in flight is
finishing, a rate limit is waiting for the service, and the tab's title says how it ended."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot, sign_in
from tests.conftest import openai_env, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_halted_run_holds_its_pages_and_offers_only_resume(
    page, web_server, qcluster, fake_openai, make_project
):
    project = make_project(pages=4, title="The Tale of Peter Rabbit")
    fake_openai.script.extend(["402"] * 4)  # out of credits, whichever worker asks first
    env = openai_env(fake_openai, STUDIO_WORKERS=1)
    qcluster(**env)
    server = web_server(**env)
    sign_in(page, server, next_url=f"/projects/{project.pk}/")

    page.get_by_role("button", name=re.compile("Generate Missing Illustrations")).click()

    expect(page.locator(".chip--held")).to_have_count(4, timeout=30_000)
    expect(page.locator(".chip--held").first).to_have_text(re.compile(r"Held: out of credits"))
    expect(page.locator(".chip--queued")).to_have_count(0)
    primary = page.locator("#live-header .button--primary")
    expect(primary).to_have_count(1)
    expect(primary).to_have_text("Resume")
    expect(page.get_by_role("button", name=re.compile("Generate Missing"))).to_have_count(0)
    expect(page.locator(".on-its-way")).to_have_text("4 pictures on their way")
    expect(page).to_have_title("⏸ Halted 0/4 · The Tale of Peter Rabbit")
    screenshot(page, "review-held")

    fake_openai.script.clear()
    page.get_by_role("button", name="Resume").click()
    expect(page.locator(".card--complete")).to_have_count(4, timeout=30_000)
    expect(page).to_have_title("✓ 4/4 · The Tale of Peter Rabbit", timeout=15_000)


def test_a_rate_limit_reads_waiting_and_a_paused_call_reads_finishing(
    page, web_server, qcluster, fake_openai, make_project
):
    project = make_project(pages=3, title="Slow Service")
    # A long timeout: the held call must stay in flight while the test looks at it.
    env = openai_env(
        fake_openai,
        STUDIO_WORKERS=2,
        STUDIO_PROVIDER_REQUESTS_PER_MINUTE=2,
        STUDIO_PROVIDER_TIMEOUT=90,
    )
    qcluster(**env)
    server = web_server(**env)
    sign_in(page, server, next_url=f"/projects/{project.pk}/")

    fake_openai.hold()  # the first call stays in flight
    page.get_by_role("button", name=re.compile("Generate Missing Illustrations")).click()
    wait_until(lambda: fake_openai.in_flight == 1, timeout=30)

    # The second worker waits for the next token of 2 a minute: not "Generating".
    waiting = page.locator(".chip--waiting")
    expect(waiting).to_have_count(1, timeout=30_000)
    expect(waiting).to_have_text(
        re.compile(r"Waiting for the service \(2 a minute; next at \d\d:\d\d:\d\d\)")
    )
    expect(page.locator(".chip--generating")).to_have_count(1)
    primary = page.locator("#live-header .button--primary")
    expect(primary).to_have_text("Pause")
    # No chip wraps onto two lines at 1280 px.
    for chip in page.locator(".chip").all():
        box = chip.bounding_box()
        line = chip.evaluate("el => parseFloat(getComputedStyle(el).lineHeight) || 18")
        assert box["height"] < 2 * line
    screenshot(page, "review-waiting")

    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".chip--finishing")).to_have_count(1)
    expect(page.locator(".chip--finishing")).to_have_text(re.compile("Finishing…"))
    expect(page.locator(".pause-banner")).to_contain_text(
        "Pausing: 1 picture being drawn will finish"
    )
    expect(page.locator("#live-header .button--primary")).to_have_text("Resume")

    fake_openai.release()
    expect(page.locator(".card--complete")).to_have_count(1, timeout=30_000)
    expect(page.locator(".pause-banner")).to_contain_text("Paused: nothing is being drawn")
    expect(page.locator(".chip--paused")).to_have_count(2)
