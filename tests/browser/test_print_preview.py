"""The book preview measured in the browser: its pages have the printed sheets' shapes, the
trim line where the print PDF's TrimBox is, and facing pages meet at the gutter."""

import pytest
from playwright.sync_api import expect

from studio.geometry import Book, parse_trim
from tests.browser.conftest import sign_in


def measured(locator) -> dict:
    found = locator.bounding_box()
    assert found is not None
    return found


def test_the_preview_draws_each_sheet_and_its_trim_at_the_print_sizes(
    page, web_server, make_project
):
    project = make_project(pages=3, title="Measured Book")
    server = web_server()
    sign_in(page, server)
    for trim in ("8.5x8.5", "8x10"):  # a spread for each page; two pages a spread
        measure_spread(page, f"{server.url}/projects/{project.pk}/book/", trim)


def measure_spread(page, url: str, trim: str) -> None:
    page.goto(f"{url}?spread=2&trim={trim}&guides=1")
    expect(page.locator(".guide--trim")).to_have_count(2)
    book = Book(trim=parse_trim(trim), pages=3)
    left, right = page.locator("figure.sheet--left"), page.locator("figure.sheet--right")
    edges = []
    for figure, sheet in ((left, book.sheet(2)), (right, book.sheet(3))):
        drawn = measured(figure.locator("svg"))
        scale = drawn["width"] / sheet.width  # screen pixels a point
        assert drawn["height"] == pytest.approx(sheet.height * scale, abs=1.5)
        # The dashed line's box has its 1.5-pixel stroke around it.
        line = measured(figure.locator(".guide--trim"))
        assert line["x"] - drawn["x"] == pytest.approx(sheet.trim.x * scale, abs=2)
        assert line["y"] - drawn["y"] == pytest.approx(sheet.trim.y * scale, abs=2)
        assert line["width"] == pytest.approx(sheet.trim.width * scale, abs=2)
        assert line["height"] == pytest.approx(sheet.trim.height * scale, abs=2)
        edges.append((drawn["x"], drawn["x"] + drawn["width"]))
    # The left-hand page's inside edge meets the right-hand page's: the gutter, no gap.
    assert edges[0][1] == pytest.approx(edges[1][0], abs=1.5)


def test_choosing_a_trim_on_the_export_page_lists_the_resolution_at_that_trim(
    page, web_server, make_project
):
    project = make_project(pages=3, title="Trimmed Book")
    server = web_server()
    sign_in(page, server, next_url=f"/projects/{project.pk}/export/")
    heading = page.locator("#resolution-title")
    expect(heading).to_have_text("Print resolution at 8.5 × 8.5 in")
    page.get_by_label("Trim").select_option("8x10")
    expect(heading).to_have_text("Print resolution at 8 × 10 in")
    expect(page.get_by_label("Trim")).to_have_value("8x10")  # the form keeps the choice
