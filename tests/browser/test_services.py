"""An editor moves a project from the offline renderer to a real image service (its
loopback fake) in Settings, and illustrates it with it."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot, sign_in
from tests.conftest import GEMINI_TEST_KEY, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_editor_switches_a_project_to_gemini_in_settings_and_illustrates_it(
    page, web_server, qcluster, fake_gemini, make_project
):
    project = make_project(pages=3, title="The Gemini Book")
    env = {
        "GEMINI_API_KEY": GEMINI_TEST_KEY,
        "GEMINI_BASE_URL": fake_gemini.url,
        "STUDIO_PROVIDER_TIMEOUT": "5",
    }
    qcluster(**env, STUDIO_WORKERS=2)
    server = web_server(**env)

    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    expect(page.locator(".provider-state")).to_contain_text("Image service: Offline renderer")
    page.get_by_role("link", name="Settings").click()
    service = page.get_by_label("Image service")
    expect(service.locator("option")).to_have_text(
        ["Offline renderer · $0.00 an image", "Gemini (gemini-3.1-flash-image) · $0.067 an image"]
    )
    service.select_option("gemini")
    screenshot(page, "settings-image-service")
    page.get_by_role("button", name="Save").click()

    expect(page.locator(".provider-state")).to_contain_text(
        "Image service: Gemini (gemini-3.1-flash-image)"
    )
    page.get_by_role("button", name=re.compile("Generate Missing Illustrations")).click()
    expect(page.locator(".card--complete")).to_have_count(3, timeout=30_000)
    expect(page.locator(".progress-text")).to_contain_text("3 of 3 illustrated")
    wait_until(lambda: len(fake_gemini.calls) == 3, timeout=10)
    screenshot(page, "review-gemini-finished")


def test_saving_the_settings_keeps_the_service_the_editor_did_not_change(
    page, web_server, fake_openai, make_project
):
    from decimal import Decimal

    from studio.models import Project
    from tests.conftest import openai_env

    # The studio's default service is OpenAI; the book has never chosen one.
    project = make_project(pages=2, title="The Default Book")
    server = web_server(**openai_env(fake_openai))

    sign_in(page, server, next_url=f"/projects/{project.pk}/settings/")
    service = page.get_by_label("Image service")
    expect(service).to_have_value("openai")  # the service in force is the one shown
    page.get_by_label("Budget (USD)").fill("5")
    page.get_by_role("button", name="Save").click()

    expect(page.locator(".provider-state")).to_contain_text("Image service: OpenAI")
    project.refresh_from_db()
    assert (project.image_service, project.budget) == ("", Decimal("5"))  # still the default
    assert Project.objects.get(pk=project.pk).title == "The Default Book"
