"""An editor in a real browser: generate, watch, stop, resume, see failures, lose the server."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot, sign_in
from tests.conftest import openai_env, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_editor_generates_watches_stops_and_finishes_a_book(
    page, web_server, qcluster, fake_openai, make_project
):
    project = make_project(pages=24, title="The Fox Book")
    fake_openai.rules.append(("meadow number 5.", "400_policy"))
    env = openai_env(fake_openai, STUDIO_WORKERS=4)
    qcluster(**env)
    server = web_server(**env)

    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    generate = page.get_by_role("button", name=re.compile("Generate Missing Illustrations"))
    expect(generate).to_have_text("Generate Missing Illustrations (24)")
    screenshot(page, "review-before")

    fake_openai.hold()  # the first four calls wait, so we can stop mid-run
    generate.click()
    expect(page.locator(".toast")).to_contain_text("Queued 24 illustrations.")
    expect(page.locator("#connection")).to_have_text("● Live")
    wait_until(lambda: fake_openai.in_flight == 4, timeout=30)
    expect(page.locator(".chip--generating")).to_have_count(4)
    screenshot(page, "review-generating")

    page.get_by_role("button", name="Stop").click()
    expect(page.locator(".toast").last).to_contain_text("Stopping")
    fake_openai.release()
    # Cards turn complete without a reload; the rest of the queue was canceled.
    expect(page.locator(".card--complete")).to_have_count(4)
    expect(page.locator(".run-state")).to_contain_text("Run stopped")
    expect(generate).to_have_text("Generate Missing Illustrations (20)")
    assert fake_openai.call_count == 4

    generate.click()
    # The four drawn before the stop stay "Complete": a new run relabels nothing.
    expect(page.locator(".card--complete")).to_have_count(23, timeout=30_000)
    rejected = page.locator(f"#page-{project.pages.get(number=5).pk}")
    expect(rejected.locator(".chip")).to_contain_text("Rejected")
    expect(rejected).to_contain_text("The image service rejected this prompt")
    expect(rejected.get_by_role("link", name="Edit prompt and retry")).to_be_visible()
    expect(page.locator(".progress-text")).to_contain_text("23 of 24 illustrated")
    # The refused prompt is not offered again unchanged: it waits for its edit.
    expect(generate).to_have_count(0)
    expect(page.get_by_role("link", name="1 rejected: edit its prompt")).to_be_visible()
    expect(page.locator("#connection")).to_be_hidden()  # nothing active: polling stopped
    assert fake_openai.successes == 23  # four before the stop, then 19; page 5 was refused
    assert len(fake_openai.prompts()) == 24
    assert set(fake_openai.prompts().values()) == {1}  # every page asked for exactly once
    screenshot(page, "review-finished")

    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "review-finished-390")


def test_the_connection_indicator_follows_the_server_and_pause_resume_work(
    page, web_server, qcluster, fake_openai, make_project
):
    project = make_project(pages=8, title="Short Book")
    env = openai_env(fake_openai, STUDIO_WORKERS=2)
    qcluster(**env)
    server = web_server(**env)
    sign_in(page, server, next_url=f"/projects/{project.pk}/")

    fake_openai.hold()
    page.get_by_role("button", name=re.compile("Generate Missing")).click()
    expect(page.locator("#connection")).to_have_text("● Live")

    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".run-state")).to_contain_text("Run paused")
    expect(page.get_by_role("button", name="Resume")).to_be_visible()

    server.stop()
    expect(page.locator("#connection")).to_have_text("Reconnecting…")
    screenshot(page, "connection-reconnecting")
    server.start()
    # The tab tries again with a growing pause; a loaded host starts the server slowly.
    expect(page.locator("#connection")).to_have_text("● Live", timeout=20_000)

    page.get_by_role("button", name="Resume").click()
    expect(page.locator(".run-state")).to_contain_text("Run running")
    fake_openai.release()
    expect(page.locator(".card--complete")).to_have_count(8, timeout=30_000)
    expect(page.locator(".run-state")).to_contain_text("Complete")


def test_an_editor_creates_a_book_from_a_manuscript_and_edits_its_pages(page, web_server, editor):
    server = web_server()
    sign_in(page, server)
    page.get_by_role("link", name="New project").click()
    page.get_by_label("Title").fill("Three Little Pages")
    page.get_by_label("Style guide and characters").fill("Crayon drawings.")
    page.locator("#id_manuscript").fill("The first.\n---\nThe second.\n---\nThe third.")
    page.get_by_role("button", name="Preview pages").click()
    expect(page.locator("#preview-title")).to_have_text("3 pages")
    screenshot(page, "create-preview")
    page.get_by_role("button", name="Create project").click()

    expect(page.locator(".message")).to_contain_text("Created “Three Little Pages” with 3 pages.")
    expect(page.locator(".card")).to_have_count(3)
    page.get_by_role("link", name="Edit pages").click()
    page.get_by_role("button", name="Move page 3 up").click()
    expect(page.locator(".page-editor__text").nth(1)).to_contain_text("The third.")
    screenshot(page, "page-editor")


def test_an_editor_illustrates_then_animates_pages(page, web_server, qcluster, make_project):
    project = make_project(pages=4, title="Moving Pictures")
    qcluster(STUDIO_WORKERS=2)
    server = web_server()
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    page.get_by_role("button", name=re.compile("Generate Missing Illustrations")).click()
    expect(page.locator(".card--complete")).to_have_count(4, timeout=30_000)
    clips = page.get_by_role("button", name=re.compile("Generate Missing Clips"))
    expect(clips).to_have_text("Generate Missing Clips (4)")
    clips.click()
    expect(page.locator("img[alt^='Animated clip of page']")).to_have_count(4, timeout=30_000)
    expect(page.locator(".clip-progress")).to_contain_text("Clips: 4 of 4")
    expect(clips).to_have_count(0)
    screenshot(page, "review-clips")
