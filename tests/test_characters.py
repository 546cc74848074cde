"""Characters: who appears on which page (tagged from the text, editable), reference
pictures checked on upload and served only to their owner, the Characters page, the
add_character command, the export and the demo book's cast."""

import io
import json
import os
import re
import struct
import subprocess
import sys
import time
import zipfile
import zlib

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from PIL import Image

from generation import services
from generation.models import SheetJob
from generation.providers.embedded_figures import COLOURS, colours_of, is_person
from studio import characters
from studio.characters import check_reference_image
from studio.models import Character, Project
from studio.services import add_page, delete_project
from studio.tasks import run_export
from tests.conftest import ROOT

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def story(make_project):
    project = make_project(pages=0, title="Peter's Book")
    for text in (
        "Peter ran. His mother said no.",
        "PETER hid from mr. mcgregor in a can.",
        "Peterson the cat watched.",
        "The gardener, McGregor, shouted.",
    ):
        add_page(project=project, text=text)
    return project


def encoded(size=(40, 40), format="PNG", colour=(200, 50, 50)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=format)
    return buffer.getvalue()


def tagged(character) -> list[int]:
    return sorted(character.pages.values_list("number", flat=True))


# --- tagging -----------------------------------------------------------------------------


def test_a_new_character_is_tagged_on_the_pages_naming_it_as_a_whole_word_in_any_case(story):
    peter = characters.create_character(project=story, name="Peter")
    mother = characters.create_character(
        project=story, name="Mrs. Rabbit", aliases="his mother, , His Mother"
    )
    mcgregor = characters.create_character(project=story, name="Mr. McGregor", aliases="McGregor")

    assert tagged(peter) == [1, 2]  # not "Peterson"
    assert tagged(mother) == [1]
    assert mother.aliases == "his mother"
    assert tagged(mcgregor) == [2, 4]


def test_a_page_whose_text_changes_gains_the_characters_it_now_names(story, client, editor):
    peter = characters.create_character(project=story, name="Peter")
    page = story.pages.get(number=3)
    client.force_login(editor)
    response = client.post(
        reverse("page-edit", args=[page.pk]), {"text": "Peter watched.", "prompt": "", "label": ""}
    )
    assert response.status_code == 302
    assert tagged(peter) == [1, 2, 3]


def test_the_page_editor_sets_who_appears_on_it(story, client, editor):
    peter = characters.create_character(project=story, name="Peter")
    fox = characters.create_character(project=story, name="Mr. Tod")
    page = story.pages.get(number=1)
    client.force_login(editor)
    form = client.get(reverse("page-edit", args=[page.pk])).content.decode()
    assert "Who appears on this page" in form and "Mr. Tod" in form

    client.post(
        reverse("page-edit", args=[page.pk]),
        {"text": page.text, "prompt": "", "label": "", "characters": [fox.pk]},
    )
    assert list(page.characters.all()) == [peter]  # a form without the checkboxes: kept

    client.post(
        reverse("page-edit", args=[page.pk]),
        {
            "text": page.text,
            "prompt": "",
            "label": "",
            "characters": [fox.pk],
            "characters_shown": "True",
        },
    )
    assert list(page.characters.all()) == [fox]  # the editor unticked Peter
    assert tagged(peter) == [2]


def test_the_prompt_panel_tags_characters_and_shows_what_would_be_sent(story, client, editor):
    peter = characters.create_character(
        project=story, name="Peter", image=check_reference_image(encoded())
    )
    page = story.pages.get(number=3)
    client.force_login(editor)
    url = reverse("page-prompt", args=[page.pk])
    client.post(
        url, {"prompt": "Peter and the cat.", "characters": [peter.pk], "characters_shown": "1"}
    )
    assert tagged(peter) == [1, 2, 3]

    panel = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "Sent with this page" in panel
    assert reverse("reference-image", args=[peter.reference_id]) in panel
    assert "Peter and the cat." in panel  # the composed prompt


# --- uploads -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (encoded(format="GIF"), "The picture is GIF; upload a PNG, JPEG or WebP picture."),
        (encoded(size=(4097, 10)), "4097×10 pixels; at most 4096 pixels a side"),
        (b"not a picture at all", "That file is not a picture the studio can read"),
        (b"\x89PNG" + b"0" * (10 * 1024 * 1024), "at most 10 MB is accepted"),
    ],
)
def test_an_upload_that_is_not_a_fitting_picture_is_a_form_error_saying_why(
    story, client, editor, content, message
):
    client.force_login(editor)
    upload = io.BytesIO(content)
    upload.name = "peter.png"
    response = client.post(
        reverse("character-list", args=[story.pk]),
        {"name": "Peter", "kind": "character", "description": "", "aliases": "", "image": upload},
    )
    assert response.status_code == 422
    assert message in response.content.decode()
    assert Character.objects.count() == 0


@pytest.mark.storage
@pytest.mark.parametrize(("format", "stored"), [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "png")])
def test_png_jpeg_and_webp_are_taken_and_served_only_to_the_owner(
    story, client, editor, other_editor, format, stored
):
    client.force_login(editor)
    upload = io.BytesIO(encoded(format=format))
    upload.name = f"peter.{format.lower()}"
    response = client.post(
        reverse("character-list", args=[story.pk]),
        {"name": "Peter", "kind": "character", "description": "Blue coat.", "image": upload},
    )
    assert response.status_code == 302
    peter = Character.objects.get()
    assert (peter.reference.width, peter.reference.source) == (40, "upload")
    url = reverse("reference-image", args=[peter.reference_id])
    served = client.get(url)
    assert served.status_code == 200
    assert served["Content-Type"] == f"image/{stored}"
    with Image.open(io.BytesIO(b"".join(served.streaming_content))) as picture:
        assert (picture.format, picture.size) == (stored.upper(), (40, 40))

    client.force_login(other_editor)
    assert client.get(url).status_code == 404
    assert client.get(reverse("character-list", args=[story.pk])).status_code == 404


def test_a_second_style_reference_and_a_taken_name_are_refused(story, client, editor):
    client.force_login(editor)
    url = reverse("character-list", args=[story.pk])
    client.post(url, {"name": "Look", "kind": "style"})
    second = client.post(url, {"name": "Other look", "kind": "style"})
    assert "already has a style reference" in second.content.decode()
    client.post(url, {"name": "Peter", "kind": "character"})
    again = client.post(url, {"name": "peter", "kind": "character"})
    assert again.status_code == 422 and "already has “peter”" in again.content.decode()
    assert Character.objects.count() == 2


def test_versions_are_kept_and_the_editor_picks_one(story, client, editor):
    client.force_login(editor)
    peter = characters.create_character(
        project=story, name="Peter", image=check_reference_image(encoded(colour=(1, 1, 1)))
    )
    first = peter.reference
    upload = io.BytesIO(encoded(colour=(2, 2, 2)))
    upload.name = "new.png"
    client.post(reverse("character-upload", args=[peter.pk]), {"image": upload})
    peter.refresh_from_db()
    assert peter.versions.count() == 2 and peter.reference != first

    page = client.get(reverse("character-edit", args=[peter.pk])).content.decode()
    assert "Use this one" in page
    client.post(reverse("character-choose", args=[peter.pk]), {"version": first.pk})
    peter.refresh_from_db()
    assert peter.reference == first


def test_the_characters_page_draws_a_sheet_and_polls_until_it_is_drawn(
    story, client, editor, openai_settings, fake_openai, drain
):
    peter = characters.create_character(project=story, name="Peter", description="Blue coat.")
    client.force_login(editor)
    url = reverse("character-list", args=[story.pk])
    assert "Draw character sheet" in client.get(url).content.decode()

    client.post(reverse("character-draw", args=[peter.pk]))
    page = client.get(url).content.decode()
    assert "Drawing the character sheet" in page and 'hx-trigger="every 2s"' in page

    drain(SheetJob.objects.get().run_id, kind="sheet")
    region = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert region.strip().startswith('<div id="character-list"') and "every 2s" not in region
    assert reverse("reference-image", args=[Character.objects.get().reference_id]) in region
    assert "Redraw" in region


# --- the command ---------------------------------------------------------------------------


def cut_off_png() -> bytes:
    """Return a PNG whose chunks are whole (Pillow's verify() passes) but whose compressed
    pixel stream stops half-way."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + bytes((x * 7 + y) % 256 for x in range(64 * 3)) for y in range(64))
    stream = zlib.compress(rows, 0)
    header = struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", stream[: len(stream) // 2])
        + chunk(b"IEND", b"")
    )


def test_a_picture_whose_data_stream_is_cut_off_is_refused_at_upload_saying_so(
    story, client, editor
):
    client.force_login(editor)
    upload = io.BytesIO(cut_off_png())
    upload.name = "poisoned.png"
    response = client.post(
        reverse("character-list", args=[story.pk]),
        {"name": "Peter", "kind": "character", "description": "", "aliases": "", "image": upload},
    )
    assert response.status_code == 422
    assert "The picture is cut off or damaged" in response.content.decode()
    assert Character.objects.count() == 0


def test_a_jpeg_is_stored_upright_without_its_exif_and_gps(story, client, editor):
    exif = Image.Exif()
    exif[0x010F] = "Spy Camera Co."  # Make
    exif[0x0112] = 6  # Orientation: turn 90° clockwise to view
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}  # GPS
    buffer = io.BytesIO()
    Image.new("RGB", (60, 40), (20, 120, 200)).save(buffer, format="JPEG", exif=exif)
    with Image.open(io.BytesIO(buffer.getvalue())) as sent:
        assert sent.getexif().get_ifd(0x8825)  # the upload does carry GPS
    client.force_login(editor)
    upload = io.BytesIO(buffer.getvalue())
    upload.name = "holiday.jpg"
    client.post(
        reverse("character-list", args=[story.pk]),
        {"name": "Peter", "kind": "character", "description": "", "aliases": "", "image": upload},
    )

    reference = Character.objects.get().reference
    with reference.image.open("rb") as stored, Image.open(stored) as picture:
        assert picture.format == "JPEG"
        assert picture.size == (40, 60)  # upright: the orientation was applied
        assert "exif" not in picture.info
        assert dict(picture.getexif()) == {}
        assert picture.getexif().get_ifd(0x8825) == {}
    assert (reference.content_type, reference.width, reference.height) == ("image/jpeg", 40, 60)


def test_add_character_prints_the_id_and_tags_the_pages_naming_it(story, tmp_path, capsys):
    picture = tmp_path / "peter.webp"
    picture.write_bytes(encoded(format="WEBP"))
    call_command(
        "add_character",
        str(story.pk),
        "--name",
        "Mr. McGregor",
        "--aliases",
        "McGregor,the gardener",
        "--description",
        "Old gardener with a rake.",
        "--image",
        str(picture),
    )
    character = Character.objects.get()
    assert capsys.readouterr().out == f"{character.pk}\n"
    assert tagged(character) == [2, 4]
    assert character.reference.content_type == "image/png"  # re-encoded at upload


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["999", "--name", "X"], "no project with id 999"),
        (["{project}", "--name", "  "], "Give the character a name."),
        (["{project}", "--name", "X", "--image", "{missing}"], "No such file or directory"),
        (["{project}", "--name", "X", "--image", "{gif}"], "upload a PNG, JPEG or WebP"),
    ],
)
def test_add_character_refuses_bad_input_with_exit_code_2(story, tmp_path, args, message):
    gif = tmp_path / "x.gif"
    gif.write_bytes(encoded(format="GIF"))
    values = {"project": story.pk, "missing": tmp_path / "none.png", "gif": gif}
    with pytest.raises(CommandError, match=message) as raised:
        call_command("add_character", *[arg.format(**values) for arg in args])
    assert raised.value.returncode == 2
    assert Character.objects.count() == 0


def test_add_character_from_the_shell_says_one_line_and_exits_2():
    result = subprocess.run(
        [sys.executable, "manage.py", "add_character", "1", "--name", "X", "--kind", "hero"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "argument --kind: invalid choice: 'hero'" in result.stderr


# --- export and demo -----------------------------------------------------------------------


@pytest.mark.storage
def test_the_export_lists_the_characters_and_each_pages_references_with_their_sheets(
    story, settings, drain
):
    settings.STUDIO_IMAGE_PROVIDER = "embedded"
    peter = characters.create_character(
        project=story, name="Peter", image=check_reference_image(encoded(colour=(9, 9, 9)))
    )
    characters.create_character(project=story, name="Mr. Tod")  # no picture yet
    drain(services.generate_missing(project=story).run.pk)
    from studio.models import Export

    export = Export.objects.create(project=story, format="zip")
    run_export(export.pk)
    export.refresh_from_db()
    with export.file.open("rb") as handle:
        archive = zipfile.ZipFile(io.BytesIO(handle.read()))
    manifest = json.loads(archive.read("manifest.json"))

    sheet = f"references/peter-v{peter.reference_id}.png"
    assert manifest["characters"] == [
        {
            "id": Character.objects.get(name="Mr. Tod").pk,
            "name": "Mr. Tod",
            "kind": "character",
            "description": "",
            "aliases": [],
            "reference": None,
            "pages": [],
        },
        {
            "id": peter.pk,
            "name": "Peter",
            "kind": "character",
            "description": "",
            "aliases": [],
            "reference": sheet,
            "pages": [1, 2],
        },
    ]
    references = [page["references"] for page in manifest["pages"]]
    entry = {"character": peter.pk, "name": "Peter", "version": peter.reference_id, "file": sheet}
    assert references == [[entry], [entry], [], []]
    assert archive.read(sheet) == encoded(colour=(9, 9, 9))


def test_the_demo_book_has_peter_his_mother_and_mr_mcgregor_with_drawn_sheets(capsys, settings):
    side = int(settings.STUDIO_IMAGE_SIZE.split("x")[0])
    call_command("seed_demo")
    project = Project.objects.get()
    cast = {c.name: c for c in project.characters.all()}
    assert sorted(cast) == ["Mr. McGregor", "Mrs. Rabbit", "Peter"]
    for character in cast.values():
        assert character.reference.source == "drawn"
        with character.reference.image.open("rb") as stored:
            assert Image.open(stored).size == (side, side)
    for name, pattern in (
        ("Peter", r"\bpeter\b"),
        ("Mrs. Rabbit", r"mrs\. rabbit|\bhis mother\b"),
        ("Mr. McGregor", r"\bmcgregor\b"),
    ):
        pages = project.pages.order_by("number")
        naming = [page.number for page in pages if re.search(pattern, page.text, re.IGNORECASE)]
        assert tagged(cast[name]) == naming
    assert len(tagged(cast["Peter"])) == 15
    # Each description says what must not change, in the words the offline renderer
    # draws from: fur (or face) and clothes; Mr. McGregor is a man, without ears.
    looks = {name: colours_of(c.description) for name, c in cast.items()}
    assert looks == {
        "Peter": (COLOURS["brown"], COLOURS["blue"]),
        "Mrs. Rabbit": (COLOURS["grey"], COLOURS["red"]),
        "Mr. McGregor": (COLOURS["tan"], COLOURS["brown"]),
    }
    assert [is_person(cast[name].description) for name in sorted(cast)] == [True, False, False]


def test_the_edit_page_shows_each_sheets_calls_and_refuses_an_empty_name(
    story, client, editor, openai_settings, fake_openai, drain
):
    peter = characters.create_character(project=story, name="Peter")
    fake_openai.script.append("503")
    drain(services.draw_sheet(character=peter).run.pk, kind="sheet")
    client.force_login(editor)
    url = reverse("character-edit", args=[peter.pk])
    html = client.get(url).content.decode()
    assert "Sheet history" in html
    assert html.count('<tr class="outcome--') == 2
    assert "outcome--transient" in html and "outcome--success" in html

    response = client.post(url, {"name": " ", "kind": "character"})
    assert response.status_code == 422
    assert "Give the character a name." in response.content.decode()
    assert Character.objects.get().name == "Peter"


def test_operators_see_characters_and_sheets_in_the_admin(
    story, client, django_user_model, openai_settings, fake_openai, drain
):
    peter = characters.create_character(project=story, name="Peter")
    drain(services.draw_sheet(character=peter).run.pk, kind="sheet")
    staff = django_user_model.objects.create_superuser("ops", password="ops-password")
    client.force_login(staff)
    assert "Peter" in client.get(reverse("admin:studio_character_changelist")).content.decode()
    job = SheetJob.objects.get()
    page = client.get(reverse("admin:generation_sheetjob_change", args=[job.pk]))
    assert page.status_code == 200 and "success" in page.content.decode().lower()


@pytest.mark.django_db(transaction=True)
def test_reference_pictures_go_with_their_project_and_are_kept_from_the_orphan_purge(
    make_project, media
):
    project = make_project(pages=1)
    peter = characters.create_character(
        project=project, name="Peter", image=check_reference_image(encoded())
    )
    kept = media / peter.reference.image.name
    stray = media / "references" / str(project.pk) / "killed-sheet.png"
    stray.write_bytes(encoded())
    then = time.time() - 20 * 60
    for path in (kept, stray):
        os.utime(path, (then, then))

    out = io.StringIO()
    call_command("purge_orphan_files", stdout=out)
    assert out.getvalue().splitlines()[-1].startswith("Removed 1 orphan file ")
    assert kept.exists() and not stray.exists()

    delete_project(project=project)
    assert not kept.exists()


def test_a_new_description_saved_on_the_edit_page_marks_its_illustrated_pages(
    story, client, editor, settings, drain
):
    from studio.review import page_cards

    settings.STUDIO_IMAGE_PROVIDER = "embedded"
    peter = characters.create_character(
        project=story,
        name="Peter",
        description="Blue jacket.",
        image=check_reference_image(encoded()),
    )
    drain(services.generate_missing(project=story).run.pk)
    client.force_login(editor)
    saved = client.post(
        reverse("character-edit", args=[peter.pk]),
        {"name": "Peter", "kind": "character", "description": "Red jacket.", "aliases": ""},
        follow=True,
    )
    assert (
        "Saved Peter. 2 illustrated pages now read “Reference changed”: regenerate them to "
        "draw them with it." in saved.content.decode()
    )
    reasons = {card.page.number: card.outdated_reason for card in page_cards(story)}
    assert reasons == {1: "Reference changed", 2: "Reference changed", 3: "", 4: ""}

    page = story.pages.get(number=1)
    response = client.post(
        reverse("page-edit", args=[page.pk]), {"text": page.text, "prompt": "", "label": ""}
    )
    assert response.status_code == 302
    messages = [str(m) for m in response.wsgi_request._messages]
    assert messages == [
        "Page 1 saved. Its picture was drawn with other reference pictures or descriptions: "
        "press Regenerate to draw it again."
    ]


# --- a main character on every page --------------------------------------------------------


def test_the_demo_shows_its_pages_without_a_character_and_peter_goes_on_every_page(
    client, settings
):
    from generation.providers import get_provider
    from generation.references import page_references, reference_limit

    call_command("seed_demo")
    project = Project.objects.get()
    peter = project.characters.get(name="Peter")
    limit = reference_limit(get_provider("embedded"))
    alone = [
        page.number
        for page in project.pages.order_by("number")
        if not page_references(page, limit=limit)
    ]
    # Nine pages never name Peter ("he", "the rabbit"); three of them name his mother or
    # Mr. McGregor, and six name nobody at all.
    assert len(alone) == 6 and len(tagged(peter)) == 15
    client.force_login(project.owner)
    url = reverse("character-list", args=[project.pk])
    html = client.get(url).content.decode()
    assert "6 pages send no character’s picture" in html
    for number in alone:
        assert f">{number}</a>" in html

    response = client.post(
        reverse("character-edit", args=[peter.pk]),
        {
            "name": "Peter",
            "kind": "character",
            "description": peter.description,
            "aliases": "",
            "every_page": "on",
        },
    )
    assert response.status_code == 302
    assert Character.objects.get(pk=peter.pk).every_page is True
    for page in project.pages.all():
        assert peter in page_references(page, limit=limit)
    html = client.get(url).content.decode()
    assert "On every page" in html
    assert "send no character’s picture" not in html
    assert "Every page sends at least one character’s picture." in html
    untagged = project.pages.get(number=alone[0])
    editor_html = client.get(reverse("page-edit", args=[untagged.pk])).content.decode()
    assert "Peter (on every page)" in editor_html


def test_a_new_character_can_go_on_every_page_and_a_style_reference_never_is(story, client, editor):
    client.force_login(editor)
    url = reverse("character-list", args=[story.pk])
    image = io.BytesIO(encoded())
    image.name = "peter.png"
    client.post(url, {"name": "Hero", "kind": "character", "every_page": "on", "image": image})
    hero = Character.objects.get(name="Hero")
    assert hero.every_page is True and tagged(hero) == []
    style = io.BytesIO(encoded())
    style.name = "style.png"
    client.post(url, {"name": "Look", "kind": "style", "every_page": "on", "image": style})
    assert Character.objects.get(name="Look").every_page is False
    from generation.references import page_references

    for page in story.pages.all():
        assert [c.name for c in page_references(page, limit=4)] == ["Look", "Hero"]
    call_command("add_character", str(story.pk), "--name", "Cat", "--every-page")
    assert Character.objects.get(name="Cat").every_page is True
