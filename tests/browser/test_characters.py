"""An editor adds a character, has the studio draw its sheet offline with a real worker,
tags it on two illustrated pages, sees them marked "Reference changed" and regenerates
them with the header's "Regenerate changed pages (2)": both pages are drawn with the
character's sheet sent along, and show the same figure (the sheet's colours, at the same
place), which the untagged page does not.
"""

import io
import re

import pytest
from django.core.files.storage import default_storage
from PIL import Image
from playwright.sync_api import expect

from generation.models import Illustration, SheetJob
from generation.providers.embedded_figures import body_point, dominant_colours, figure_box
from studio import characters
from studio.characters import check_reference_image
from studio.models import Character
from tests.browser.conftest import card_action, screenshot, sign_in

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_character_sheet_drawn_offline_is_sent_with_the_two_pages_it_is_tagged_on(
    page, web_server, qcluster, make_project
):
    project = make_project(pages=3, title="Benjamin's Book")
    qcluster(STUDIO_WORKERS=2)
    server = web_server()
    sign_in(page, server, next_url=f"/projects/{project.pk}/")
    page.get_by_role("button", name=re.compile("Generate Missing Illustrations")).click()
    expect(page.locator(".card--complete")).to_have_count(3, timeout=30_000)

    page.get_by_role("link", name="Characters").click()
    page.locator("#id_name").fill("Benjamin")
    page.locator("#id_description").fill("A small rabbit in a brown tam-o'-shanter.")
    page.get_by_role("button", name="Add character").click()
    expect(page.locator(".message")).to_contain_text("Added Benjamin; tagged on 0 pages")
    page.get_by_role("button", name="Draw character sheet").click()
    sheet = page.get_by_role("img", name="Reference picture of Benjamin")
    expect(sheet).to_be_visible(timeout=30_000)  # the list polls until the worker drew it
    expect(page.get_by_role("button", name="Redraw")).to_be_visible()
    screenshot(page, "characters-sheet-drawn")
    benjamin = Character.objects.get()
    assert benjamin.reference.source == "drawn"
    assert SheetJob.objects.get().attempts.get().outcome == "success"

    page.goto(f"{server.url}/projects/{project.pk}/")
    pages = list(project.pages.order_by("number")[:2])
    for tagged in pages:
        card = page.locator(f"#page-{tagged.pk}")
        card_action(card, "link", "Edit prompt").click()
        panel = page.locator("#panel")
        panel.get_by_label("Benjamin").check()
        panel.get_by_role("button", name="Save", exact=True).click()
        expect(card.locator(".chip")).to_have_text(re.compile("Reference changed"))
    expect(page.locator(".card--outdated")).to_have_count(2)
    screenshot(page, "characters-reference-changed")

    page.get_by_role("button", name=re.compile(r"Regenerate changed pages \(2\)")).click()
    # Page 3 kept its picture from the first run: it reads Complete like the two redrawn.
    expect(page.locator(".card--complete")).to_have_count(3, timeout=30_000)
    expect(page.locator(".card--outdated")).to_have_count(0)
    screenshot(page, "characters-regenerated")

    sent = {
        job.page.number: [(e["name"], e["reference"]) for e in job.references_sent]
        for job in Illustration.objects.filter(page__project=project, status="complete")
    }
    assert sent == {1: [("Benjamin", benjamin.reference_id)], 2: sent[1], 3: []}
    card_action(page.locator(f"#page-{pages[0].pk}"), "link", "History").click()
    expect(page.locator("#panel .history-references img").first).to_have_attribute(
        "alt", f"Benjamin (version {benjamin.reference_id})"
    )

    # The same figure on both tagged pages: drawn in the sheet's colours at the same place
    # (the body in the sheet's most common colour, its clothes), and not on page 3.
    jacket, fur, _ = dominant_colours(benjamin.reference.image.read())
    pictures = {
        job.page.number: picture(job)
        for job in Illustration.objects.filter(page__project=project, status="complete")
    }
    width, height = pictures[1].size
    left, top, right, bottom = figure_box("Benjamin", width, height)
    body = body_point("Benjamin", width, height)
    assert near(pictures[1].getpixel(body), jacket) and near(pictures[2].getpixel(body), jacket)
    assert not near(pictures[3].getpixel(body), jacket)
    figure = [in_colours(pictures[n], (left, top, right, bottom), (jacket, fur)) for n in (1, 2, 3)]
    assert figure[0] > 0.3 and figure[1] > 0.3, figure  # the figure fills its box
    assert figure[2] < 0.05, figure  # page 3's meadow has none of Benjamin's colours there
    # Pixel for pixel, the body is the same on both pages.
    inner = (body[0] - 3, body[1] - 3, body[0] + 3, body[1] + 3)
    assert pictures[1].crop(inner).tobytes() == pictures[2].crop(inner).tobytes()


def picture(job: Illustration) -> Image.Image:
    with job.image.open("rb") as stored:
        return Image.open(io.BytesIO(stored.read())).convert("RGB")


def near(colour, other, tolerance: int = 16) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, other, strict=True))


def in_colours(image: Image.Image, box, colours) -> float:
    """Return the share of the box's pixels drawn in one of the colours."""
    region = image.crop(box)
    data = region.tobytes()
    pixels = [tuple(data[i : i + 3]) for i in range(0, len(data), 3)]
    return sum(1 for p in pixels if any(near(p, c) for c in colours)) / len(pixels)


def test_an_editor_deletes_an_earlier_version_and_then_the_character(
    page, web_server, make_project
):
    project = make_project(pages=2, title="Benjamin's Book")
    project.pages.filter(number=1).update(text="Benjamin hops.")
    benjamin = characters.create_character(
        project=project, name="Benjamin", image=check_reference_image(png((130, 90, 55)))
    )
    characters.add_reference(character=benjamin, image=check_reference_image(png((45, 85, 175))))
    earlier, chosen = benjamin.versions.order_by("pk")
    files = [earlier.image.name, chosen.image.name]
    server = web_server()
    sign_in(page, server, next_url=f"/characters/{benjamin.pk}/")

    screenshot(page, "characters-versions")
    page.get_by_role("link", name=f"Delete version {earlier.pk}").click()
    expect(
        page.get_by_role("heading", name=f"Delete version {earlier.pk} of Benjamin?")
    ).to_be_visible()
    page.get_by_role("button", name=f"Delete version {earlier.pk}").click()
    expect(page.locator(".message")).to_contain_text(f"Deleted version {earlier.pk} of Benjamin.")
    expect(page.get_by_role("img", name=re.compile("Version \\d+ of Benjamin"))).to_have_count(1)
    # The chosen version offers no Delete: another must be chosen first.
    expect(page.get_by_role("link", name=re.compile("Delete version"))).to_have_count(0)
    assert not default_storage.exists(files[0]) and default_storage.exists(files[1])

    page.get_by_role("link", name="Delete Benjamin").click()
    expect(page.get_by_role("heading", name="Delete Benjamin?")).to_be_visible()
    expect(page.locator("main")).to_contain_text("takes Benjamin off the 1 page it is tagged on")
    screenshot(page, "characters-delete-confirm")
    page.get_by_role("button", name="Delete Benjamin").click()
    expect(page.locator(".message")).to_contain_text("Deleted Benjamin and its pictures.")
    expect(page.locator("#character-list")).to_contain_text("No characters yet.")
    assert Character.objects.count() == 0
    assert not default_storage.exists(files[1])


def png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
    return buffer.getvalue()
