"""Generate Missing past the budget, in a real browser: the choice appears before anything
starts, and generating the pictures that fit queues exactly those."""

import re
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from generation.models import Illustration
from tests.browser.conftest import screenshot, sign_in

pytestmark = pytest.mark.django_db(transaction=True)


def test_generate_missing_asks_before_passing_the_budget_and_generates_what_fits(
    page, web_server, make_project
):
    project = make_project(pages=24, title="The Budget Book")
    project.budget = Decimal("0.30")
    project.save()
    server = web_server(STUDIO_PRICES='{"embedded": "0.042"}')

    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    page.get_by_role("button", name=re.compile("Generate Missing Illustrations")).click()

    choice = page.locator("#generate-choice")
    expect(choice).to_contain_text("24 pictures ≈ $1.01; the budget leaves $0.30: 7 pictures.")
    expect(choice.get_by_role("link", name="Raise the budget")).to_be_visible()
    expect(choice.get_by_role("link", name="Cancel")).to_be_visible()
    screenshot(page, "budget-choice")
    assert Illustration.objects.count() == 0  # nothing started

    choice.get_by_role("button", name="Generate the 7 that fit").click()
    expect(page.locator(".toast")).to_contain_text("Queued 7 illustrations.")
    expect(choice).to_be_empty()
    expect(page.locator(".chip--queued")).to_have_count(7)
    assert sorted(Illustration.objects.values_list("page__number", flat=True)) == list(range(1, 8))
