"""The print export's upscale step: a page picture under 300 DPI upscaled through Replicate
(nightmareai/real-esrgan, against the loopback fake over real HTTP), journalled and priced
like every paid call, kept beside the page's own picture, and printed from."""

import io
from decimal import Decimal

import pikepdf
import pytest
import requests
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from PIL import Image

from generation import catalogue, selectors, services
from generation.models import GenerationAttempt, Illustration, SpendEntry, Upscale
from generation.pricing import money
from generation.providers.base import ConfigError, Rejected, UpscaleRequest
from generation.providers.replicate_upscale import ReplicateUpscaleProvider, classify
from studio import book, geometry
from studio.export import run_export
from studio.models import Export
from studio.printing import is_low, report_lines

pytestmark = pytest.mark.django_db

TRIM = "4x4"  # a small square trim: a 512 px picture prints at 124 DPI, ×4 at 496


def png(side: int, colour=(200, 120, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def picture(page, side: int, content: bytes | None = None) -> Illustration:
    job = Illustration(page=page, status=Illustration.Status.COMPLETE, width=side, height=side)
    job.image.save("picture.png", ContentFile(content or png(side)), save=False)
    job.save()
    return job


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def book_project(media, make_project):
    """Two illustrated pages at a 4 × 4 in trim: page 1 at 512 px (under 300 DPI), page 2
    at 1,400 px (over)."""
    project = make_project(pages=2)
    project.trim = TRIM
    project.save(update_fields=["trim"])
    first, second = project.pages.order_by("number")
    picture(first, 512)
    picture(second, 1400)
    return project


@pytest.fixture
def upscale_settings(replicate_image_settings, fake_predictions):
    settings = replicate_image_settings
    settings.STUDIO_UPSCALE_PROVIDER = "replicate"
    settings.STUDIO_UPSCALE_MODEL = catalogue.default_upscaler("replicate")
    fake_predictions.polls_needed = 1
    return settings


def upscale_low_pages(project):
    low = book.low_resolution_pages(project, geometry.parse_trim(project.trim))
    return services.upscale_pages(project=project, page_ids=[p.page_id for p in low])


def print_export(project) -> Export:
    export = Export.objects.create(
        project=project, format=Export.Format.PRINT, trim=project.trim, paper="white"
    )
    run_export(export)
    export.refresh_from_db()
    return export


def test_an_upscale_goes_through_the_service_once_is_priced_once_and_is_printed_from(
    book_project, upscale_settings, fake_predictions, drain
):
    page = book_project.pages.get(number=1)
    own = page.illustrations.get()
    queued = upscale_low_pages(book_project)
    assert queued.count == 1

    assert drain(queued.run.pk, kind="upscale") == 1

    upscale = Upscale.objects.get()
    assert (upscale.status, upscale.page, upscale.source) == ("complete", page, own)
    assert (upscale.scale, upscale.width, upscale.height) == (4, 2048, 2048)
    # The service got the picture as a data URL, with the scale, by version.
    assert fake_predictions.creates == 1
    sent = fake_predictions.inputs[0]
    assert sent["scale"] == 4
    assert fake_predictions.input_images == [None]  # not a Kontext input_image
    assert sent["image"].startswith("data:image/png;base64,")
    # One journal row, with its key; one ledger entry at the catalogue's price.
    attempt = GenerationAttempt.objects.get()
    assert attempt.upscale == upscale
    assert (attempt.outcome, attempt.charge) == ("success", "paid")
    assert fake_predictions.idempotency_keys == [f"studio-upscale-{upscale.pk}-1"]
    entry = SpendEntry.objects.get()
    assert (entry.attempt_id, entry.kind, entry.provider) == (attempt.pk, "upscale", "replicate")
    assert entry.amount == catalogue.upscaler("replicate", upscale.model).price
    assert entry.model == upscale.model == "nightmareai/real-esrgan"
    # What generation_status reports; a run of upscales alone is no run of the book's.
    assert selectors.ledger_summary(book_project.pk) == {
        "paid_calls": 1,
        "unconfirmed_calls": 0,
        "spent": str(entry.amount),
    }
    assert not selectors.book_runs().filter(pk=queued.run.pk).exists()
    # The page's picture, and its history, are as the editor left them.
    own.refresh_from_db()
    assert page.illustrations.get() == own and own.status == "complete"
    assert own.image.name != upscale.image.name

    # The export page no longer lists it as low; it names the upscale.
    trim = geometry.parse_trim(TRIM)
    resolution = book.print_resolution(book_project, trim)
    assert resolution.low == []
    [done] = resolution.upscaled
    assert (done.number, done.scale, done.dpi >= 300) == (1, 4, True)

    export = print_export(book_project)
    assert export.status == "complete"
    assert not [entry for entry in export.report if is_low(entry)]
    [line] = report_lines(export.report)
    assert line.startswith("Page 1: upscaled ×4 by Replicate nightmareai/real-esrgan (")
    [entry] = export.report
    assert entry["upscaled"]["model"] == "nightmareai/real-esrgan"
    assert entry["dpi"] >= 300
    # The print file holds the upscaled pixels: the widest picture in it is the upscale's
    # crop, wider than the 512 px picture and at least 300 DPI across its box.
    with export.file.open("rb") as stored, pikepdf.open(io.BytesIO(stored.read())) as pdf:
        widths = [
            image.Width
            for pdf_page in pdf.pages
            for image in pdf_page.get_images().values()
            if int(image.Height) >= 1000
        ]
    assert len(widths) == 2  # page 1 from its upscale, page 2 from its own 1,400 px
    assert all(width >= 300 * 4.125 for width in widths)


def test_an_upscale_whose_answer_is_lost_is_journalled_as_unknown_and_sent_again_with_its_key(
    book_project, upscale_settings, fake_predictions, drain
):
    fake_predictions.files_expire_next = 1  # the first output is gone before the download
    queued = upscale_low_pages(book_project)

    drain(queued.run.pk, kind="upscale")

    first, second = GenerationAttempt.objects.order_by("number")
    assert (first.charge, second.charge) == ("unknown", "paid")
    assert first.idempotency_key == second.idempotency_key
    assert fake_predictions.idempotency_keys == [first.idempotency_key] * 2
    assert fake_predictions.creates == 2
    entries = {e.attempt_id: (e.basis, e.confirmed) for e in SpendEntry.objects.all()}
    assert entries == {first.pk: ("likely", False), second.pk: ("price", True)}
    assert Upscale.objects.get().status == "complete"


def test_a_picture_that_cannot_be_read_fails_its_upscale_without_a_call(
    book_project, upscale_settings, fake_predictions, drain
):
    page = book_project.pages.get(number=1)
    own = page.illustrations.get()
    with own.image.open("wb") as broken:
        broken.write(b"not a picture")
    queued = upscale_low_pages(book_project)

    drain(queued.run.pk, kind="upscale")

    upscale = Upscale.objects.get()
    assert upscale.status == "failed"
    assert "could not prepare" in upscale.error_message
    assert fake_predictions.creates == 0
    assert SpendEntry.objects.count() == 0


def test_the_fake_refuses_what_real_esrgan_refuses(upscale_settings, fake_predictions):
    version = catalogue.default_upscaler("replicate")
    headers = {"Authorization": "Bearer r8_test_token"}
    cases = [
        ({"scale": 4}, "- input: image is required"),
        ({"image": "data:image/png;base64,bm90IGEgcGljdHVyZQ=="}, "input.image"),
        ({"image": "picture.png"}, "input.image"),
        ({"image": "https://example.com/p.png", "scale": 11}, "input.scale"),
    ]
    for inputs, said in cases:
        answer = requests.post(
            f"{fake_predictions.url}/predictions",
            json={"version": version, "input": inputs},
            headers=headers,
            timeout=5,
        )
        assert answer.status_code == 422, inputs
        assert said in answer.json()["detail"]
    assert fake_predictions.creates == 0
    # The studio's reading of those answers: a picture is this page's; a scale, the setting.
    assert isinstance(classify(422, {}, b'{"detail": "- input: image is required"}'), Rejected)
    error = classify(422, {}, b'{"detail": "- input.scale: Must be less than or equal to 10"}')
    assert isinstance(error, ConfigError) and error.setting == "STUDIO_UPSCALE_MODEL"


def test_a_scale_the_model_refuses_is_named_as_configuration(upscale_settings, fake_predictions):
    provider = ReplicateUpscaleProvider()
    with pytest.raises(ConfigError) as refused:
        provider.create(UpscaleRequest(image=png(64), scale=11, idempotency_key="k"))
    assert refused.value.setting == "STUDIO_UPSCALE_MODEL"
    assert refused.value.http_status == 422


def test_the_export_page_offers_the_service_upscale_with_its_price(
    client, editor, book_project, upscale_settings
):
    client.force_login(editor)
    page = client.get(reverse("project-export", args=[book_project.pk])).content.decode()
    price = catalogue.upscaler("replicate", upscale_settings.STUDIO_UPSCALE_MODEL).price
    assert f"Upscale 1 page through Replicate (≈ {money(price)})" in page

    answer = client.post(reverse("project-upscale", args=[book_project.pk]), follow=True)

    assert answer.status_code == 200
    upscale = Upscale.objects.get()
    assert (upscale.page.number, upscale.status) == (1, "queued")
    said = answer.content.decode()
    assert "Upscaling 1 picture ×4 through Replicate (nightmareai/real-esrgan)" in said
    assert "(being upscaled)" in said
    # A second press queues nothing more while that one is on its way.
    client.post(reverse("project-upscale", args=[book_project.pk]))
    assert Upscale.objects.count() == 1


def test_without_an_upscale_service_the_local_resample_is_offered(
    client, editor, book_project, settings
):
    settings.STUDIO_UPSCALE_PROVIDER = ""
    client.force_login(editor)
    page = client.get(reverse("project-export", args=[book_project.pk])).content.decode()
    assert "Upscale 1 page" not in page
    assert "No upscale service is configured" in page
    assert 'name="resample"' in page

    refused = client.post(reverse("project-upscale", args=[book_project.pk]))

    assert refused.status_code == 400
    assert b"No upscale service is configured" in refused.content
    assert Upscale.objects.count() == 0


def test_another_editor_cannot_upscale_a_project(
    client, other_editor, book_project, upscale_settings
):
    client.force_login(other_editor)
    answer = client.post(reverse("project-upscale", args=[book_project.pk]))
    assert answer.status_code == 404
    assert Upscale.objects.count() == 0


def test_the_upscale_price_is_the_catalogues_unless_configured(settings):
    from generation.pricing import price_per_upscale

    model = catalogue.default_upscaler("replicate")
    assert price_per_upscale("replicate", model) == Decimal("0.0025")
    settings.STUDIO_PRICES = {"replicate:nightmareai/real-esrgan": 0.004}
    assert price_per_upscale("replicate", model) == Decimal("0.004")


def test_export_project_upscales_then_prints_from_the_upscales(
    book_project, upscale_settings, fake_predictions, tmp_path
):
    fake_predictions.polls_needed = 0  # finished within the create's Prefer: wait
    output = io.StringIO()
    target = tmp_path / "book-print.pdf"

    call_command(
        "export_project",
        book_project.pk,
        "--format",
        "print",
        "--upscale",
        "--output",
        str(target),
        stdout=output,
    )

    lines = output.getvalue().splitlines()
    price = catalogue.upscaler("replicate", upscale_settings.STUDIO_UPSCALE_MODEL).price
    assert lines[0] == (
        "Upscaled 1 of 1 picture(s) ×4 through Replicate (nightmareai/real-esrgan), "
        f"{money(price)}."
    )
    label = geometry.parse_trim(TRIM).label
    assert lines[2] == f"Every picture prints at 300 DPI or more at {label}."
    assert lines[3].startswith("Page 1: upscaled ×4 by Replicate nightmareai/real-esrgan (")
    assert len(lines) == 4
    assert target.stat().st_size > 0
    assert (GenerationAttempt.objects.count(), SpendEntry.objects.count()) == (1, 1)


def test_export_project_upscale_refuses_bad_usage_in_one_line(book_project, settings, tmp_path):
    settings.STUDIO_UPSCALE_PROVIDER = ""
    output = str(tmp_path / "out.pdf")
    with pytest.raises(CommandError) as refused:
        call_command(
            "export_project", book_project.pk, "--format", "print", "--upscale", "--output", output
        )
    assert refused.value.returncode == 2
    assert str(refused.value).startswith("--upscale needs an upscale service")
    with pytest.raises(CommandError) as refused:
        call_command(
            "export_project", book_project.pk, "--format", "zip", "--upscale", "--output", output
        )
    assert refused.value.returncode == 2
    assert str(refused.value) == "--upscale is for --format print or cover"
    assert Upscale.objects.count() == 0


def test_an_upscale_file_is_owned_and_a_stray_one_is_an_orphan(
    book_project, upscale_settings, fake_predictions, drain
):
    from datetime import timedelta

    from django.core.files.storage import default_storage
    from django.utils import timezone

    from studio import files

    drain(upscale_low_pages(book_project).run.pk, kind="upscale")
    upscale = Upscale.objects.get()
    stray = default_storage.save(f"upscales/{book_project.pk}/stray.png", ContentFile(png(8)))

    assert upscale.image.name in files.owned_files(project=book_project)
    later = timezone.now() + timedelta(hours=1)
    orphans = [orphan.name for orphan in files.OrphanSearch(written_before=later)]
    assert orphans == [stray]


def test_out_of_credits_halts_the_upscale_and_pays_nothing(
    book_project, upscale_settings, fake_predictions, drain
):
    fake_predictions.create_script.append("402")
    queued = upscale_low_pages(book_project)

    drain(queued.run.pk, kind="upscale")

    queued.run.refresh_from_db()
    assert (queued.run.state, queued.run.halt_reason) == ("halted", "out_of_credits")
    assert Upscale.objects.get().status == "queued"  # Resume continues it
    assert GenerationAttempt.objects.get().outcome == "out_of_credits"
    assert SpendEntry.objects.count() == 0


def test_operators_see_upscales_and_their_calls_in_the_admin(
    client, django_user_model, book_project, upscale_settings, fake_predictions, drain
):
    drain(upscale_low_pages(book_project).run.pk, kind="upscale")
    upscale = Upscale.objects.get()
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)

    listed = client.get(reverse("admin:generation_upscale_changelist"))
    shown = client.get(reverse("admin:generation_upscale_change", args=[upscale.pk]))

    assert (listed.status_code, shown.status_code) == (200, 200)
    assert "nightmareai/real-esrgan" in listed.content.decode()
    assert upscale.attempts.get().provider_request_id in shown.content.decode()


def test_the_resolution_region_follows_an_upscale_until_it_is_done(
    client, editor, book_project, upscale_settings, fake_predictions, drain
):
    client.force_login(editor)
    url = reverse("project-export", args=[book_project.pk]) + "?part=resolution"
    queued = upscale_low_pages(book_project)

    while_upscaling = client.get(url, headers={"HX-Request": "true"})
    assert while_upscaling.status_code == 200
    assert "hx-trigger" in while_upscaling.content.decode()
    assert "1 picture being upscaled" in while_upscaling.content.decode()

    drain(queued.run.pk, kind="upscale")
    done = client.get(url, headers={"HX-Request": "true"})

    assert done.status_code == 286  # htmx stops polling
    shown = done.content.decode()
    assert "hx-trigger" not in shown
    assert "Printed from their upscale:" in shown
    assert "Page 1: upscaled ×4 by Replicate nightmareai/real-esrgan to 2048 × 2048 px" in shown


@pytest.fixture
def upscaled_book(media, make_project):
    """Four pages at a 4 × 4 in trim: page 1 at 512 px (low), page 2 at 1,400 px (fine),
    page 3 at 512 px upscaled ×4 to 2,048 (printed from its upscale), page 4 at 256 px
    upscaled ×4 to 1,024 (printed from its upscale, still low)."""
    project = make_project(pages=4)
    project.trim = TRIM
    project.save(update_fields=["trim"])
    first, second, third, fourth = project.pages.order_by("number")
    picture(first, 512)
    picture(second, 1400)
    for page, side in ((third, 512), (fourth, 256)):
        upscale = Upscale(
            page=page,
            source=picture(page, side),
            status=Upscale.Status.COMPLETE,
            provider="replicate",
            model=catalogue.canonical("replicate", catalogue.default_upscaler("replicate")),
            scale=4,
            width=side * 4,
            height=side * 4,
        )
        upscale.image.save("upscale.png", ContentFile(png(8)), save=False)
        upscale.save()
    return project


def test_one_pass_finds_both_the_low_pages_and_the_upscaled_ones(upscaled_book):
    first, _, _, fourth = upscaled_book.pages.order_by("number")
    resolution = book.print_resolution(upscaled_book, geometry.parse_trim(TRIM))
    # As low_resolution_pages and upscaled_pages listed them, each on its own.
    assert resolution.low == [
        book.LowPage(1, (512, 512), 120, page_id=first.pk),
        book.LowPage(4, (256, 256), 60, page_id=fourth.pk, upscaled=(1024, 1024)),
    ]
    model = "nightmareai/real-esrgan"
    assert resolution.upscaled == [
        book.UpscaledPage(3, 4, "replicate", model, pixels=(2048, 2048), dpi=481),
        book.UpscaledPage(4, 4, "replicate", model, pixels=(1024, 1024), dpi=240),
    ]
    assert resolution.pages == 4


def test_the_export_page_reads_the_pictures_and_their_upscales_once(
    client, editor, upscaled_book, upscale_settings
):
    client.force_login(editor)
    url = reverse("project-export", args=[upscaled_book.pk])
    client.get(url)  # the session and the caches settle
    with CaptureQueriesContext(connection) as captured:
        page = client.get(url).content.decode()
    sql = [query["sql"] for query in captured.captured_queries]
    # Before: 18, the page count three times, the complete upscales twice, and each
    # upscale's page once more on its own.
    assert len(sql) == 13
    counts = [q for q in sql if q.startswith('SELECT COUNT(*) AS "__count" FROM "studio_page"')]
    assert len(counts) == 1
    assert "Page 1: 512 × 512 px, 120 DPI" in page
    assert "Page 3: upscaled ×4 by Replicate nightmareai/real-esrgan to 2048 × 2048 px" in page


def test_a_failing_upscale_is_retried_then_shown_failed_with_its_reason(
    client, editor, book_project, upscale_settings, fake_predictions, drain
):
    fake_predictions.outcome = "failed"  # every prediction fails ("CUDA out of memory")
    queued = upscale_low_pages(book_project)

    drain(queued.run.pk, kind="upscale", waits=[])

    upscale = Upscale.objects.get()
    assert (upscale.status, upscale.attempts.count()) == ("failed", 3)
    assert fake_predictions.creates == 3  # each attempt a new prediction
    assert SpendEntry.objects.count() == 0
    client.force_login(editor)
    page = client.get(reverse("project-export", args=[book_project.pk])).content.decode()
    assert (
        "Page 1: the upscale failed: Replicate&#x27;s prediction failed: CUDA out of memory" in page
    )
    assert "Upscale 1 page through Replicate" in page  # offered again


def test_the_scale_keeps_the_upscaled_picture_within_what_the_studio_accepts():
    from generation.kinds import fitting_scale

    assert fitting_scale(4, 1024, 1024) == 4  # 4,096 px
    assert fitting_scale(4, 1536, 1024) == 4  # 6,144 × 4,096
    assert fitting_scale(4, 2600, 2600) == 3  # ×4 would be 10,400 px a side (at most 8,192)
    assert fitting_scale(4, 2048, 2048) == 3  # ×4: 8,192 a side but 67 million pixels
    assert fitting_scale(4, None, None) == 4


def test_a_large_png_goes_as_a_jpeg_under_a_megabyte():
    import base64

    from generation.providers.replicate_upscale import as_data_url

    noisy = Image.effect_noise((1024, 1024), 80).convert("RGB")
    buffer = io.BytesIO()
    noisy.save(buffer, format="PNG")
    assert len(buffer.getvalue()) > 1024 * 1024
    small = png(64)

    sent = as_data_url(buffer.getvalue())
    as_stored = as_data_url(small)

    assert sent.startswith("data:image/jpeg;base64,")
    assert len(base64.b64decode(sent.split(",", 1)[1])) <= 1024 * 1024
    assert as_stored == "data:image/png;base64," + base64.b64encode(small).decode()
