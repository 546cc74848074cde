"""Cards and header that never mislead, in a real browser with real workers and the
loopback fake service: a halted run's pages are held, a paused run's call in flight is
finishing, a rate limit is waiting for the service, and the tab's title says how it ended."""

import re

import pytest
from playwright.sync_api import expect

from studio.models import Project
from tests.browser.conftest import card_action, screenshot, sign_in
from tests.conftest import openai_env, stop_process_group, wait_until

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
    expect(page.locator(".on-its-way")).to_have_text("4 pictures wait for Resume")
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

    # The other two pages wait for the next token of 2 a minute, back in the queue with
    # their next try (no worker sits out the wait): not "Generating".
    waiting = page.locator(".chip--waiting")
    expect(waiting).to_have_count(2, timeout=30_000)
    waiting = waiting.first
    expect(waiting).to_have_text(re.compile("Waiting for the service"))
    expect(waiting).to_have_attribute(
        "title", re.compile(r"^Waiting for the service \(2 a minute; next at \d\d:\d\d:\d\d\)$")
    )
    card = page.locator(".card", has=page.locator(".chip--waiting")).first
    expect(card.locator(".card__detail")).to_have_text(
        re.compile(r"^2 a minute; next at \d\d:\d\d:\d\d$")
    )
    # Every chip shows all its words: none is cut short, none wraps.
    for chip in page.locator(".chip").all():
        assert chip.evaluate("el => el.scrollWidth <= el.clientWidth")
    expect(page.locator(".chip--generating")).to_have_count(1)
    primary = page.locator("#live-header .button--primary")
    expect(primary).to_have_text("Pause")
    expect(page.locator(".on-its-way")).to_have_text("3 pictures on their way")
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


def test_failures_read_in_plain_words_and_a_rejected_page_is_edited_not_retried(
    page, web_server, qcluster, fake_openai, make_project
):
    from tests.test_runstudio import free_port

    project = make_project(pages=3, title="Plain Words")
    fake_openai.rules.append(("meadow number 2.", "400_policy"))
    fake_openai.rules.append(("meadow number 3.", "500"))
    env = openai_env(fake_openai, STUDIO_WORKERS=1, STUDIO_MAX_ATTEMPTS=1)
    workers = qcluster(**env)
    server = web_server(**env)
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    page.get_by_role("button", name=re.compile("Generate Missing Illustrations")).click()
    expect(page.locator(".card--complete")).to_have_count(1, timeout=30_000)
    expect(page.locator(".card--rejected")).to_have_count(1, timeout=30_000)
    expect(page.locator(".card--failed")).to_have_count(1, timeout=30_000)

    # Only the failed page is retried: sending a refused prompt again is pointless.
    expect(page.get_by_role("button", name=re.compile("Retry failed"))).to_have_text(
        "Retry failed (1)"
    )
    rejected = page.locator(f"#page-{project.pages.get(number=2).pk}")
    rejected.get_by_role("link", name="Edit prompt and retry").click()
    expect(page.locator("#panel textarea")).to_have_value(
        "Page 2: the fox crosses meadow number 2."
    )
    expect(page.locator("#panel .rejection-reason")).to_contain_text("safety system")
    page.locator("#panel textarea").fill("A fox in a meadow, friendly and calm.")
    page.get_by_role("button", name="Save and retry").click()
    expect(rejected.locator(".chip")).to_have_text(re.compile("Complete"), timeout=30_000)
    card_action(rejected, "link", "History").click()
    expect(page.locator("#panel")).to_contain_text("Picture: Rejected")

    # The service cannot be reached at all: the card says so in words, History keeps the
    # library's text.
    closed = f"http://127.0.0.1:{free_port()}/v1"
    stop_process_group(workers)  # only workers that cannot reach the service remain
    qcluster(
        **openai_env(fake_openai, STUDIO_WORKERS=1, STUDIO_MAX_ATTEMPTS=1, OPENAI_BASE_URL=closed)
    )
    server.stop()
    server.env.update(OPENAI_BASE_URL=closed)
    server.start()
    page.reload()
    failed = page.locator(f"#page-{project.pages.get(number=3).pk}")
    failed.get_by_role("button", name="Retry").click()
    expect(failed.locator(".card__error")).to_have_text(
        re.compile(r"Could not reach the image service \(connection refused\)"), timeout=30_000
    )
    expect(failed.locator(".card__error")).not_to_contain_text("Errno")
    card_action(failed, "link", "History").click()
    expect(page.locator("#panel .history-table").first).to_contain_text("Connection refused")
    screenshot(page, "review-plain-words")


def test_changed_style_guide_offers_regenerate_changed_pages(
    page, web_server, qcluster, make_project
):
    project = make_project(pages=3, title="Restyled")
    qcluster(STUDIO_WORKERS=2)
    server = web_server()
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    page.get_by_role("button", name=re.compile("Generate Missing Illustrations")).click()
    expect(page.locator(".card--complete")).to_have_count(3, timeout=30_000)

    page.goto(f"{server.url}/projects/{project.pk}/settings/")
    page.get_by_label("Style guide and characters").fill("Linocut, two colours.")
    page.get_by_role("button", name="Save").click()
    page.goto(f"{server.url}/")
    row = page.locator(".project-row", has_text="Restyled")
    expect(row).to_contain_text("3 pictures out of date")
    expect(row).not_to_contain_text("✓ Complete")

    page.goto(f"{server.url}/projects/{project.pk}/")
    expect(page.locator(".outdated-line")).to_have_text(re.compile("3 pictures out of date"))
    regenerate = page.get_by_role("button", name=re.compile("Regenerate changed pages"))
    expect(regenerate).to_have_text(re.compile(r"Regenerate changed pages \(3\) ≈ \$"))
    regenerate.click()
    expect(page.locator(".toast").last).to_contain_text("Drawing 3 changed pages again")
    expect(page.locator(".outdated-line")).to_have_count(0, timeout=30_000)
    expect(page.locator(".card--complete")).to_have_count(3)
    expect(page.locator(".run-state")).to_contain_text("✓ Complete")


def test_a_budget_halt_quotes_the_headers_spend_and_is_not_the_services_state(
    page, web_server, qcluster, fake_openai, make_project
):
    project = make_project(pages=5, title="On a Budget")
    env = openai_env(fake_openai, STUDIO_WORKERS=1)
    qcluster(**env)
    server = web_server(**env)
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    # A budget set while the run draws (Generate Missing asks first when its estimate is
    # past the budget): the workers halt at it.
    fake_openai.latency = 1.0
    page.get_by_role("button", name=re.compile("Generate Missing Illustrations")).click()
    expect(page.locator("#live-header")).to_contain_text("on their way")
    Project.objects.filter(pk=project.pk).update(budget="0.10")

    banner = page.locator(".budget-banner")
    expect(banner).to_contain_text("Budget reached.", timeout=30_000)
    spent = re.search(r"Spent (\$[0-9.]+)", page.locator(".spend").inner_text()).group(1)
    expect(banner).to_contain_text(f"it has spent {spent}")
    expect(page.locator(".provider-state")).to_contain_text("ok")
    expect(page.locator(".chip--held").first).to_have_text(re.compile("Held: budget reached"))
    expect(page.locator("#live-header .button--primary")).to_have_text("Resume")
    screenshot(page, "review-budget")
