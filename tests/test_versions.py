"""Versions, variants and approval: every picture a page had is kept, any of them can be
made current again without a call, variants are jobs like any other, and approved pages
are left alone by bulk actions."""

import pytest
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.urls import reverse

from generation import selectors, services
from generation.models import GenerationAttempt, Illustration, Run, SpendEntry
from generation.thumbnails import ensure_thumbnail, thumbnail_name

pytestmark = pytest.mark.django_db

Status = Illustration.Status
HTMX = {"HX-Request": "true"}


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def illustrated(make_project, drain, media):
    """A two-page book whose pages were drawn once by the offline renderer."""
    project = make_project(pages=2)
    drain(services.generate_missing(project=project).run.pk)
    return project


def redraw(page, drain) -> None:
    drain(services.queue_page(page=page, regenerate=True).run.pk)


def current_of(page) -> Illustration:
    return page.illustrations.get(status=Status.COMPLETE)


# --- versions ------------------------------------------------------------------------


def test_every_complete_picture_of_a_page_is_kept_as_a_version(illustrated, drain):
    page = illustrated.pages.get(number=1)
    first = current_of(page)
    redraw(page, drain)
    redraw(page, drain)

    versions = selectors.page_versions(page)

    assert len(versions) == 3
    assert [v.status for v in versions] == [Status.COMPLETE, Status.REPLACED, Status.REPLACED]
    assert versions[-1].pk == first.pk  # newest first
    assert all(v.image and v.provider == "embedded" and v.prompt_sent for v in versions)


def test_use_this_version_makes_an_older_picture_current_without_a_call(illustrated, drain):
    page = illustrated.pages.get(number=1)
    first = current_of(page)
    redraw(page, drain)
    second = current_of(page)
    calls = GenerationAttempt.objects.count()
    spent = SpendEntry.objects.count()

    services.use_version(illustration=first)

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (Status.COMPLETE, Status.REPLACED)
    assert GenerationAttempt.objects.count() == calls
    assert SpendEntry.objects.count() == spent
    assert Run.objects.filter(state=Run.State.RUNNING).count() == 0  # nothing was queued


def test_use_this_version_is_refused_while_a_new_picture_is_on_its_way(illustrated):
    page = illustrated.pages.get(number=1)
    services.queue_page(page=page, regenerate=True)
    # A version cannot be current yet: the page's only picture is the current one, so make
    # one by hand to show the refusal is about the job on its way.
    old = Illustration.objects.create(page=page, status=Status.REPLACED, image="x.png")

    with pytest.raises(services.VersionRefused, match="on its way"):
        services.use_version(illustration=old)

    assert current_of(page).pk != old.pk


def test_deleting_a_version_deletes_its_files_once_committed_and_keeps_its_calls(
    illustrated, drain, django_capture_on_commit_callbacks
):
    page = illustrated.pages.get(number=1)
    old = current_of(page)
    redraw(page, drain)
    ensure_thumbnail(old.image)
    name = old.image.name
    assert default_storage.exists(name) and default_storage.exists(thumbnail_name(name))

    with django_capture_on_commit_callbacks(execute=True):
        services.delete_version(illustration=old)

    old.refresh_from_db()
    assert (old.status, old.image.name) == (Status.DISCARDED, "")
    assert not default_storage.exists(name)
    assert not default_storage.exists(thumbnail_name(name))
    assert old.attempts.count() == 1  # the call it cost stays in the history
    assert [v.pk for v in selectors.page_versions(page)] == [current_of(page).pk]


def test_a_deletion_that_rolls_back_deletes_no_file(illustrated, drain):
    page = illustrated.pages.get(number=1)
    old = current_of(page)
    redraw(page, drain)
    with pytest.raises(RuntimeError), transaction.atomic():
        services.delete_version(illustration=old)
        raise RuntimeError("something after it failed")
    old.refresh_from_db()
    assert old.status == Status.REPLACED and default_storage.exists(old.image.name)


def test_the_current_picture_cannot_be_deleted(illustrated):
    current = current_of(illustrated.pages.get(number=1))
    with pytest.raises(services.VersionRefused, match="not the current picture"):
        services.delete_version(illustration=current)
    current.refresh_from_db()
    assert current.status == Status.COMPLETE and default_storage.exists(current.image.name)


# --- variants ------------------------------------------------------------------------


def test_variants_are_jobs_on_the_engine_kept_beside_the_current_picture(illustrated, drain):
    page = illustrated.pages.get(number=2)
    current = current_of(page)
    attempts = GenerationAttempt.objects.count()

    queued = services.queue_variants(page=page, count=3)
    assert queued.count == 3
    jobs = list(page.illustrations.filter(candidate=True).order_by("variant"))
    assert [(j.variant, j.status) for j in jobs] == [(n, Status.QUEUED) for n in (1, 2, 3)]

    assert drain(queued.run.pk) == 3

    assert current_of(page).pk == current.pk  # a variant never displaces the picture
    candidates = selectors.page_candidates(page)
    assert [c.status for c in candidates] == [Status.REPLACED] * 3
    assert len({c.image.read() for c in candidates}) == 3  # three different pictures
    assert GenerationAttempt.objects.count() == attempts + 3
    queued.run.refresh_from_db()
    assert queued.run.state == Run.State.FINISHED


def test_each_variant_is_one_paid_call_in_the_ledger(
    openai_settings, fake_openai, make_project, drain
):
    page = make_project(pages=1).pages.get()
    drain(services.generate_missing(project=page.project).run.pk)

    run = services.queue_variants(page=page, count=3).run
    drain(run.pk)

    assert fake_openai.call_count == 4
    entries = SpendEntry.objects.filter(run_id=run.pk)
    assert entries.count() == 3
    attempts = GenerationAttempt.objects.filter(illustration__variant__gt=0)
    assert sorted(e.attempt_id for e in entries) == sorted(a.pk for a in attempts)
    assert len({a.idempotency_key for a in attempts}) == 3  # three calls, never one twice


def test_picking_a_variant_makes_it_current_and_keeps_the_others_as_versions(illustrated, drain):
    page = illustrated.pages.get(number=2)
    before = current_of(page)
    drain(services.queue_variants(page=page, count=3).run.pk)
    second = page.illustrations.get(candidate=True, variant=2)

    services.use_version(illustration=second)

    assert current_of(page).pk == second.pk
    assert selectors.page_candidates(page) == []  # the choice is made
    versions = {v.pk for v in selectors.page_versions(page)}
    others = set(page.illustrations.filter(variant__in=(1, 3)).values_list("pk", flat=True))
    assert versions == {second.pk, before.pk} | others


def test_the_first_variant_to_finish_fills_a_page_without_a_picture(make_project, drain):
    project = make_project(pages=1)
    page = project.pages.get()

    drain(services.queue_variants(page=page, count=2).run.pk)

    first, second = page.illustrations.order_by("variant")
    assert (first.status, second.status) == (Status.COMPLETE, Status.REPLACED)
    assert selectors.project_progress(project).illustrated == 1
    assert len(selectors.page_candidates(page)) == 2  # still the editor's to pick


def test_a_second_try_while_variants_are_on_their_way_queues_nothing(illustrated):
    page = illustrated.pages.get(number=1)
    services.queue_variants(page=page, count=2)
    with pytest.raises(services.VersionRefused, match="already has a picture on its way"):
        services.queue_variants(page=page, count=2)
    assert services.queue_page(page=page, regenerate=True).count == 0
    assert page.illustrations.filter(status=Status.QUEUED).count() == 2


def test_the_database_allows_one_active_job_per_page_and_variant_slot(illustrated):
    page = illustrated.pages.get(number=1)
    services.queue_variants(page=page, count=2)
    with pytest.raises(IntegrityError), transaction.atomic():
        Illustration.objects.create(page=page, variant=2)
    Illustration.objects.create(page=page, variant=0)
    with pytest.raises(IntegrityError), transaction.atomic():
        Illustration.objects.create(page=page, variant=0)
    with pytest.raises(IntegrityError), transaction.atomic():
        Illustration.objects.create(page=page, variant=5, status=Status.FAILED)


@pytest.mark.parametrize("count", [0, 5, -1])
def test_a_variant_count_outside_1_to_4_is_refused(illustrated, count):
    with pytest.raises(services.VersionRefused, match="Try 1 to 4 variants"):
        services.queue_variants(page=illustrated.pages.get(number=1), count=count)
    assert not Illustration.objects.filter(status=Status.QUEUED).exists()


def test_keeping_the_current_picture_closes_the_choice(illustrated, drain):
    page = illustrated.pages.get(number=1)
    before = current_of(page)
    drain(services.queue_variants(page=page, count=2).run.pk)
    assert services.keep_current_picture(page=page) == 2
    assert current_of(page).pk == before.pk
    assert selectors.page_candidates(page) == []
    assert len(selectors.page_versions(page)) == 3


# --- approval ------------------------------------------------------------------------


def test_approve_all_approves_every_page_with_a_picture_and_the_header_counts_them(
    make_project, drain
):
    project = make_project(pages=4)
    run = services.generate_missing(project=project).run
    drain(run.pk, limit=3)  # one page stays without a picture

    assert services.approve_all(project=project) == 3
    assert services.approve_all(project=project) == 0

    progress = selectors.project_progress(project)
    assert (progress.approved, progress.not_approved, progress.to_approve) == (3, 1, 0)
    assert list(selectors.not_approved_pages(project).values_list("number", flat=True)) == [4]


def test_approval_goes_when_the_current_picture_changes(illustrated, drain):
    page = illustrated.pages.get(number=1)
    first = current_of(page)
    assert services.approve_page(page=page) == 1
    redraw(page, drain)
    assert selectors.project_progress(illustrated).approved == 0

    services.approve_page(page=page)
    services.use_version(illustration=first)
    assert selectors.project_progress(illustrated).approved == 0
    first.refresh_from_db()
    assert first.approved_at is None  # coming back does not bring an old approval back


def test_an_approved_page_refuses_variants_unless_confirmed(illustrated):
    page = illustrated.pages.get(number=1)
    services.approve_page(page=page)
    with pytest.raises(services.VersionRefused, match="approved"):
        services.queue_variants(page=page, count=2)
    assert services.queue_variants(page=page, count=2, confirm_approved=True).count == 2


def test_a_page_without_a_picture_cannot_be_approved(make_project):
    page = make_project(pages=1).pages.get()
    assert services.approve_page(page=page) == 0
    assert services.unapprove_page(page=page) == 0


# --- the views -----------------------------------------------------------------------


@pytest.fixture
def signed_in(client, editor):
    client.force_login(editor)
    return client


def test_the_variants_panel_prices_each_choice_before_confirming(
    signed_in, make_project, openai_settings
):
    page = make_project(pages=1).pages.get()
    html = signed_in.get(reverse("page-variants", args=[page.pk]), headers=HTMX).content.decode()
    price = selectors.picture_price(page.project)
    from generation.pricing import money

    for count in (1, 2, 3, 4):
        assert f"{count} variant{'s' if count > 1 else ''} ≈ {money(price * count)}" in html
    assert Illustration.objects.count() == 0  # opening it queues nothing


def test_a_refused_variants_request_answers_with_the_reason(signed_in, illustrated):
    page = illustrated.pages.get(number=1)
    response = signed_in.post(
        reverse("page-variants", args=[page.pk]), {"count": "9"}, headers=HTMX
    )
    assert response.status_code == 200
    assert "Try 1 to 4 variants." in response.headers["HX-Trigger"]
    assert not Illustration.objects.filter(status=Status.QUEUED).exists()


def test_another_editors_version_is_not_found(client, other_editor, illustrated):
    client.force_login(other_editor)
    current = current_of(illustrated.pages.get(number=1))
    assert client.post(reverse("version-use", args=[current.pk])).status_code == 404
    assert client.post(reverse("version-delete", args=[current.pk])).status_code == 404


def test_the_history_shows_each_version_with_when_service_model_and_prompt(
    signed_in, illustrated, drain
):
    page = illustrated.pages.get(number=1)
    redraw(page, drain)
    html = signed_in.get(reverse("page-history", args=[page.pk]), headers=HTMX).content.decode()
    assert "Versions of the picture (2)" in html
    assert html.count("Use this version") == 1  # not on the current picture
    for version in selectors.page_versions(page):
        assert reverse("illustration-thumbnail", args=[version.pk]) in html
        assert version.finished_at.strftime("%Y-%m-%d") in html
    assert "embedded" in html and "Page 1: the fox crosses meadow number 1." in html


def test_the_admins_bulk_regenerate_leaves_approved_pages_alone(
    client, django_user_model, illustrated
):
    from tests.test_operator_tools import post_action

    client.force_login(django_user_model.objects.create_superuser("op", "op@example.com", "pw"))
    first, second = illustrated.pages.order_by("number")
    services.approve_page(page=first)
    jobs = [current_of(first).pk, current_of(second).pk]

    said = post_action(client, "generation_illustration", "regenerate_selected", jobs)

    assert said == (
        "Queued 1 illustration to draw again. Skipped 1 approved page: regenerate an approved "
        "page on its own, from the review page."
    )
    assert list(
        Illustration.objects.filter(status=Status.QUEUED).values_list("page", flat=True)
    ) == [second.pk]


def test_the_clip_follows_the_version_chosen(illustrated, drain):
    page = illustrated.pages.get(number=1)
    first = current_of(page)
    drain(services.queue_clip(page=page).run.pk, kind="clip")
    clip_of_first = page.clips.get(status=Status.COMPLETE)
    redraw(page, drain)

    services.use_version(illustration=first)
    assert page.clips.get(status=Status.COMPLETE).pk == clip_of_first.pk  # still its picture

    second = page.illustrations.get(status=Status.REPLACED)
    services.use_version(illustration=second)
    # The clip animates the other picture: it steps aside (kept), so the card shows the
    # picture chosen and "Make clip" is offered again.
    assert not page.clips.filter(status=Status.COMPLETE).exists()
    assert page.clips.get().status == Status.REPLACED

    services.use_version(illustration=first)
    assert page.clips.get(status=Status.COMPLETE).pk == clip_of_first.pk


def test_without_javascript_the_variants_page_is_a_plain_form(signed_in, illustrated):
    page = illustrated.pages.get(number=1)
    url = reverse("page-variants", args=[page.pk])
    assert "How many variants to draw" in signed_in.get(url).content.decode()

    response = signed_in.post(url, {"count": "2"})

    assert response.status_code == 302 and response["Location"] == illustrated.get_absolute_url()
    assert page.illustrations.filter(status=Status.QUEUED, candidate=True).count() == 2
