"""The review page, its poll and every control, as an editor's browser sees them over HTTP."""

import json
import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from generation import services
from generation.models import Clip, Illustration, Run
from studio.models import Export, Project
from studio.tasks import run_export

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
Status = Illustration.Status


@pytest.fixture
def book(make_project):
    return make_project(pages=3, title="Owned Book")


@pytest.fixture
def illustrated(book, drain):
    run = services.generate_missing(project=book).run
    drain(run.pk)
    return book


@pytest.fixture
def everything(illustrated, drain):
    """The illustrated book with its clips and an export: every kind of URL exists."""
    drain(services.generate_missing_clips(project=illustrated).run.pk, kind="clip")
    run_export(Export.objects.create(project=illustrated, format="zip").pk)
    return illustrated


@pytest.fixture
def signed_in(client, editor):
    client.force_login(editor)
    return client


def detail(client, project) -> str:
    return client.get(reverse("project-detail", args=[project.pk])).content.decode()


def toast(response) -> dict:
    return json.loads(response["HX-Trigger"])["toast"]


def cards_in(html: str) -> list[str]:
    return re.findall(r'<article id="(page-\d+)"', html)


def poll(client, project, since):
    url = reverse("project-poll", args=[project.pk])
    return client.get(url, {"since": f"{since.timestamp():.3f}"}, headers=HTMX)


# --- every URL: anonymous, another editor, owner ---------------------------------------


def all_urls(project, page, image):
    p, g, i = project.pk, page.pk, image.pk
    clip = Clip.objects.filter(page__project=project, status="complete").first()
    export = Export.objects.get(project=project)
    return [
        ("get", reverse("project-list"), 200),
        ("get", reverse("project-create"), 200),
        ("get", reverse("project-create-premise"), 200),
        ("get", reverse("project-detail", args=[p]), 200),
        ("get", reverse("project-poll", args=[p]) + "?since=0", 200),
        ("get", reverse("project-generating", args=[p]), 200),
        ("post", reverse("project-generate", args=[p]), 302),
        ("post", reverse("project-generate-section", args=[p]), 400),  # no section given
        ("post", reverse("pages-reorder", args=[p]), 400),  # no order given
        ("post", reverse("project-retry-failed", args=[p]), 302),
        ("post", reverse("project-stop", args=[p]), 302),
        ("post", reverse("project-pause", args=[p]), 302),
        ("post", reverse("project-resume", args=[p]), 302),
        ("post", reverse("page-retry", args=[g]), 302),
        ("post", reverse("page-regenerate", args=[g]), 302),
        ("post", reverse("page-next", args=[g]), 302),
        ("get", reverse("page-prompt", args=[g]), 200),
        ("get", reverse("page-history", args=[g]), 200),
        ("get", reverse("project-settings", args=[p]), 200),
        ("get", reverse("project-pages", args=[p]), 200),
        ("post", reverse("page-add", args=[p]), 422),  # no text given
        ("get", reverse("page-edit", args=[g]), 200),
        ("post", reverse("page-move", args=[g]), 400),  # no direction given
        ("get", reverse("page-delete", args=[g]), 200),
        ("get", reverse("project-delete", args=[p]), 200),
        ("get", reverse("project-export", args=[p]), 200),
        ("get", reverse("project-book", args=[p]), 200),
        ("get", reverse("page-gallery", args=[p, g]), 200),
        ("get", reverse("export-download", args=[export.pk]), 200),
        ("post", reverse("project-generate-clips", args=[p]), 302),
        ("post", reverse("project-retry-failed-clips", args=[p]), 302),
        ("post", reverse("page-clip", args=[g]), 302),
        ("get", reverse("clip-video", args=[clip.pk]), 200),
        ("get", reverse("illustration-image", args=[i]), 200),
        ("get", reverse("illustration-thumbnail", args=[i]), 200),
    ]


def test_every_url_sends_anonymous_visitors_to_sign_in(client, everything):
    image = Illustration.objects.filter(page__project=everything).first()
    for method, url, _ in all_urls(everything, image.page, image):
        response = getattr(client, method)(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url


def test_every_url_of_another_editors_project_answers_404(client, everything, other_editor):
    client.force_login(other_editor)
    image = Illustration.objects.filter(page__project=everything).first()
    own_urls = {reverse(n) for n in ("project-list", "project-create", "project-create-premise")}
    for method, url, _ in all_urls(everything, image.page, image):
        if url in own_urls:
            response = client.get(url)
            assert response.status_code == 200
            assert b"Owned Book" not in response.content
            continue
        assert getattr(client, method)(url).status_code == 404, url
    assert Illustration.objects.filter(page__project=everything).count() == 3  # nothing queued


def test_every_url_answers_its_owner(signed_in, everything):
    image = Illustration.objects.filter(page__project=everything).first()
    for method, url, status in all_urls(everything, image.page, image):
        assert getattr(signed_in, method)(url).status_code == status, url


def test_state_changing_urls_refuse_get(signed_in, book):
    page = book.pages.first()
    for name, pk in [
        ("project-generate", book.pk),
        ("project-stop", book.pk),
        ("project-pause", book.pk),
        ("project-resume", book.pk),
        ("project-retry-failed", book.pk),
        ("project-generate-section", book.pk),
        ("pages-reorder", book.pk),
        ("page-retry", page.pk),
        ("page-regenerate", page.pk),
        ("page-next", page.pk),
    ]:
        assert signed_in.get(reverse(name, args=[pk])).status_code == 405, name
    assert Illustration.objects.count() == 0


# --- the review page ---------------------------------------------------------------------


def test_the_review_page_offers_generate_missing_with_its_count(signed_in, make_project):
    project = make_project(pages=24)
    html = detail(signed_in, project)
    assert 'Generate Missing Illustrations <span class="badge">(24)</span>' in html
    assert html.count('class="card card--pending"') == 24
    assert "0 of 24 illustrated" in html
    # Nothing is on its way: the tab still asks, backing off (static/studio/app.js).
    assert html.count("data-poll-idle") == 1
    for control in ("Pause", "Resume", ">Stop<", "Retry failed"):
        assert control not in html


def test_a_complete_project_says_so_and_hides_generate(signed_in, illustrated):
    html = detail(signed_in, illustrated)
    assert "Generate Missing Illustrations" not in html
    assert "✓ Complete: every page is illustrated." in html
    assert html.count('class="card card--complete"') == 3
    image = Illustration.objects.filter(page__project=illustrated).first()
    assert f'src="{reverse("illustration-thumbnail", args=[image.pk])}"' in html
    # The picture opens its page's gallery (a page of its own without script).
    gallery = reverse("page-gallery", args=[illustrated.pk, image.page_id])
    assert f'<a href="{gallery}" data-gallery' in html


def test_the_thumbnail_is_a_small_webp(signed_in, illustrated):
    image = Illustration.objects.filter(page__project=illustrated).first()
    response = signed_in.get(reverse("illustration-thumbnail", args=[image.pk]))
    assert response["Content-Type"] == "image/webp"
    assert b"".join(response.streaming_content)[8:12] == b"WEBP"


def test_the_page_chips_say_where_each_page_stands(signed_in, make_project, settings):
    settings.STUDIO_MAX_ATTEMPTS = 3
    project = make_project(pages=6)
    old = Run.objects.create(project=project, state=Run.State.FINISHED)
    run = services.generate_missing(project=project).run
    pages = list(project.pages.all())
    jobs = {j.page_id: j for j in Illustration.objects.all()}
    next_try = timezone.now().replace(microsecond=0) + timedelta(seconds=30)
    Illustration.objects.filter(pk=jobs[pages[0].pk].pk).update(
        status=Status.GENERATING, attempts_made=1
    )
    Illustration.objects.filter(pk=jobs[pages[1].pk].pk).update(
        status=Status.RETRYING, attempts_made=1, next_attempt_at=next_try
    )
    Illustration.objects.filter(pk=jobs[pages[2].pk].pk).update(
        status=Status.FAILED,
        failure_reason="exhausted",
        attempts_made=3,
        error_message="The engine is currently overloaded.",
    )
    Illustration.objects.filter(pk=jobs[pages[3].pk].pk).update(
        status=Status.FAILED,
        failure_reason="rejected",
        attempts_made=1,
        error_message="Your request was rejected by the safety system.",
    )
    Illustration.objects.filter(pk=jobs[pages[4].pk].pk).update(status=Status.COMPLETE, run=old)

    html = detail(signed_in, project)

    # The chip says the state on one line; what it adds goes on the line below, and the
    # whole sentence is the chip's hover text.
    assert 'title="Generating (attempt 2 of 3)"' in html
    assert '<p class="card__detail">attempt 2 of 3</p>' in html
    assert f'title="Retrying (next try at {next_try:%H:%M:%S})"' in html
    assert "Failed after 3 attempts: The engine is currently overloaded." in html
    assert "Rejected" in html and "Edit prompt and retry" in html
    # A picture from an earlier run is complete like any other: a new run relabels nothing.
    assert html.count('class="card card--complete"') == 1
    assert "Exists" not in html
    assert html.count('class="card card--queued"') == 1
    assert run.pk != old.pk


def test_a_halted_run_shows_a_banner_with_the_next_action(
    signed_in, book, openai_settings, fake_openai, drain
):
    fake_openai.default = "402"
    run = services.generate_missing(project=book).run
    drain(run.pk)
    html = detail(signed_in, book)
    assert "Generation halted." in html
    assert (
        "The image service (openai) says the account is out of credits (HTTP 402). "
        "Add credits, then press Resume."
    ) in html
    assert ">Resume<" in html and ">Stop<" in html


# --- controls ------------------------------------------------------------------------------


def test_generate_queues_the_missing_pages_and_answers_with_the_regions(signed_in, book):
    url = reverse("project-generate", args=[book.pk])
    response = signed_in.post(url, headers=HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith(
        '<section id="live-header" class="project-header" hx-swap-oob="true"'
    )
    assert 'hx-trigger="studio-poll"' in html and "data-poll-idle" not in html
    assert len(cards_in(html)) == 3
    assert html.count('hx-swap-oob="true"') == 4  # the header and three cards
    assert html.count('class="card card--queued"') == 3
    assert toast(response) == {"level": "success", "message": "Queued 3 illustrations."}

    again = signed_in.post(url, headers=HTMX)
    assert toast(again)["message"] == "Nothing to queue: every page is illustrated or on its way."
    assert cards_in(again.content.decode()) == []
    assert Illustration.objects.count() == 3


def test_controls_work_without_javascript(signed_in, book):
    response = signed_in.post(reverse("project-generate", args=[book.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("project-detail", args=[book.pk])
    assert "Queued 3 illustrations." in detail(signed_in, book)


def test_pause_resume_and_stop_change_the_run_once(signed_in, book):
    services.generate_missing(project=book)
    pause = reverse("project-pause", args=[book.pk])
    assert (
        toast(signed_in.post(pause, headers=HTMX))["message"] == "Paused. Press Resume to continue."
    )
    assert toast(signed_in.post(pause, headers=HTMX))["message"] == "Nothing to pause."
    html = detail(signed_in, book)
    assert ">Resume<" in html and ">Pause<" not in html

    resume = reverse("project-resume", args=[book.pk])
    assert toast(signed_in.post(resume, headers=HTMX))["message"] == "Resumed."
    assert toast(signed_in.post(resume, headers=HTMX))["message"] == "Nothing to resume."

    stop = reverse("project-stop", args=[book.pk])
    first = signed_in.post(stop, headers=HTMX)
    assert toast(first)["message"] == "Stopped. Completed illustrations are kept."
    assert len(cards_in(first.content.decode())) == 3  # the canceled cards come back
    assert toast(signed_in.post(stop, headers=HTMX))["message"] == "Nothing is running."
    assert Illustration.objects.filter(status=Status.CANCELED).count() == 3


def test_retry_failed_queues_each_failed_page_once(signed_in, book):
    for page in book.pages.all()[:2]:
        Illustration.objects.create(page=page, status=Status.FAILED, failure_reason="exhausted")
    html = detail(signed_in, book)
    assert 'Retry failed <span class="badge">(2)</span>' in html
    url = reverse("project-retry-failed", args=[book.pk])
    assert toast(signed_in.post(url, headers=HTMX))["message"] == "Retrying 2 failed pages."
    assert toast(signed_in.post(url, headers=HTMX))["message"] == "No failed pages to retry."
    assert Illustration.objects.filter(status=Status.QUEUED).count() == 2


def test_regenerate_keeps_the_old_picture_until_the_new_one_is_complete(
    signed_in, illustrated, drain
):
    page = illustrated.pages.get(number=2)
    old = page.illustrations.get(status=Status.COMPLETE)
    response = signed_in.post(reverse("page-regenerate", args=[page.pk]), headers=HTMX)
    assert toast(response)["level"] == "success"
    html = response.content.decode()
    # A new run began, so every card came back (the others now read "Exists").
    assert len(cards_in(html)) == 3
    card = re.search(rf'<article id="page-{page.pk}".*?</article>', html, re.S).group(0)
    assert reverse("illustration-thumbnail", args=[old.pk]) in card  # still shown
    assert "Queued" in card

    run = Run.objects.get(state=Run.State.RUNNING)
    drain(run.pk)
    old.refresh_from_db()
    new = page.illustrations.get(status=Status.COMPLETE)
    assert old.status == Status.REPLACED and new.pk != old.pk
    assert reverse("illustration-thumbnail", args=[new.pk]) in detail(signed_in, illustrated)


def test_generate_next_moves_a_page_to_the_front(signed_in, book):
    services.generate_missing(project=book)
    page = book.pages.get(number=3)
    response = signed_in.post(reverse("page-next", args=[page.pk]), headers=HTMX)
    assert toast(response)["message"] == "Page 3 is next in line."
    assert "Queued · next" in response.content.decode()
    assert page.illustrations.get().priority == 1


def test_edit_prompt_and_retry_saves_and_requeues_a_rejected_page(signed_in, book):
    page = book.pages.get(number=1)
    Illustration.objects.create(page=page, status=Status.FAILED, failure_reason="rejected")
    url = reverse("page-prompt", args=[page.pk])
    form = signed_in.get(url, headers=HTMX)
    assert form.status_code == 200
    assert "Save and retry" in form.content.decode()
    assert "<html" not in form.content.decode()

    response = signed_in.post(url, {"prompt": "A friendly fox", "retry": "1"}, headers=HTMX)
    assert response.status_code == 200
    assert toast(response)["message"] == "Prompt of page 1 saved. Drawing it again."
    page.refresh_from_db()
    assert page.prompt == "A friendly fox"
    assert page.illustrations.filter(status=Status.QUEUED).count() == 1


def test_a_too_long_prompt_is_refused_with_a_form_error(signed_in, book):
    page = book.pages.get(number=1)
    response = signed_in.post(
        reverse("page-prompt", args=[page.pk]), {"prompt": "x" * 4001}, headers=HTMX
    )
    assert response.status_code == 422
    assert "at most 4000 characters (this one has 4001)" in response.content.decode()
    page.refresh_from_db()
    assert page.prompt == ""


def test_history_lists_every_attempt(signed_in, book, openai_settings, fake_openai, drain):
    fake_openai.script.extend(["503"])
    run = services.generate_missing(project=book).run
    drain(run.pk, limit=1)
    page = book.pages.get(number=1)
    html = signed_in.get(reverse("page-history", args=[page.pk]), headers=HTMX).content.decode()
    assert html.count('<tr class="outcome--') == 2
    assert "Transient" in html and "503" in html and "overloaded" in html
    assert "Success" in html
    assert "Prompt sent: Page 1: the fox crosses meadow number 1." in html


# --- the poll --------------------------------------------------------------------------------


def test_a_controls_answer_brings_every_card_changed_since_its_tab_looked(
    signed_in, make_project, drain
):
    """The answer swaps in a new header: its cards must be as new, including those changed
    elsewhere since the tab last looked (its script sends the tab's cursor)."""
    project = make_project(pages=3)
    since = re.search(r"since=([\d.]+)", detail(signed_in, project))[1]  # the tab, idle
    run = services.generate_missing(project=project).run  # another tab, a command
    drain(run.pk, limit=1)  # one page drawn meanwhile
    url = reverse("project-generate", args=[project.pk])  # nothing more to queue
    response = signed_in.post(url, headers={**HTMX, "X-Studio-Since": since})
    html = response.content.decode()
    assert "1 of 3 illustrated" in html
    assert html.count('class="card card--complete"') == 1
    assert html.count('class="card card--queued"') == 2


def test_the_poll_answers_the_header_and_only_the_changed_cards(signed_in, make_project, drain):
    project = make_project(pages=10)
    run = services.generate_missing(project=project).run
    before = timezone.now() + timedelta(seconds=10)  # past the cursor margin
    response = poll(signed_in, project, before)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="live-header" class="project-header"\n')
    assert 'hx-trigger="studio-poll"' in html and "data-poll-idle" not in html
    assert cards_in(html) == []

    Illustration.objects.filter(page__number=4).update(updated_at=before + timedelta(seconds=1))
    assert cards_in(poll(signed_in, project, before).content.decode()) == [
        f"page-{project.pages.get(number=4).pk}"
    ]
    drain(run.pk)
    idle = poll(signed_in, project, timezone.now() - timedelta(seconds=60))
    assert idle.status_code == 200  # an idle book's tab keeps asking, less often
    assert "data-poll-idle" in idle.content.decode()
    assert "10 of 10 illustrated" in idle.content.decode()
    assert len(cards_in(idle.content.decode())) == 10


def test_the_poll_refuses_a_bad_cursor(signed_in, book):
    url = reverse("project-poll", args=[book.pk])
    assert signed_in.get(url, {"since": "yesterday"}, headers=HTMX).status_code == 400


def test_queries_per_poll_do_not_grow_with_the_pages(signed_in, make_project, editor):
    def queries_for(pages: int) -> int:
        project = make_project(pages=pages, title=f"{pages} pages")
        services.generate_missing(project=project)
        with CaptureQueriesContext(connection) as captured:
            response = poll(signed_in, project, timezone.now() - timedelta(minutes=5))
        assert response.status_code == 200
        assert len(cards_in(response.content.decode())) == pages  # every card changed
        return len(captured)

    small, large = queries_for(10), queries_for(500)
    # One reads the database's clock for the cursor; one asks whether a worker is alive
    # (work is queued).
    # One of them reads the ORM broker's cluster heartbeats (on Redis, no query at all).
    # One reads the progress of each section (the changed cards may change it).
    # The poll checks the session against the project's version first (the one query of a
    # quiet poll), then loads the project with its owner for the answer. Sessions in the
    # database alone (PostgreSQL without Redis) add their row's lookup.
    broker = "orm" in settings.Q_CLUSTER
    sessions = not settings.SESSION_ENGINE.endswith("cached_db")
    assert small == large == 14 + broker + sessions


def test_the_generating_view_skips_the_story_and_offers_the_missing_pages(signed_in, book):
    url = reverse("project-generating", args=[book.pk])
    html = signed_in.get(url).content.decode()
    assert "Skipped: the story already has 3 pages." in html
    assert 'Generate Missing Illustrations <span class="badge">(3)</span>' in html
    signed_in.get(url)  # opening or refreshing it never starts work
    assert Illustration.objects.count() == 0
    assert Run.objects.count() == 0


def test_the_generating_view_polls_the_header_only(signed_in, book):
    services.generate_missing(project=book)
    html = signed_in.get(reverse("project-generating", args=[book.pk])).content.decode()
    assert "cards=0" in html
    url = reverse("project-poll", args=[book.pk])
    response = signed_in.get(url, {"since": "0", "cards": "0"}, headers=HTMX)
    assert response.status_code == 200
    assert cards_in(response.content.decode()) == []
    assert "cards=0" in response.content.decode()  # it keeps polling the same way


def test_a_new_run_keeps_calling_earlier_pictures_complete(signed_in, make_project, drain):
    project = make_project(pages=3)
    run = services.generate_missing(project=project).run
    drain(run.pk, limit=1)
    services.stop(project=project)
    Illustration.objects.update(updated_at=timezone.now() - timedelta(minutes=5))
    response = signed_in.post(reverse("project-generate", args=[project.pk]), headers=HTMX)
    html = response.content.decode()
    assert len(cards_in(html)) == 3
    assert html.count('class="card card--complete"') == 1
    assert html.count('class="card card--queued"') == 2


def test_the_project_list_costs_the_same_queries_for_2_or_20_projects(signed_in, make_project):
    def queries_with(count: int) -> int:
        while Project.objects.count() < count:
            services.generate_missing(project=make_project(pages=2))
        with CaptureQueriesContext(connection) as captured:
            html = signed_in.get(reverse("project-list")).content.decode()
        assert html.count('class="project-row"') == count
        assert html.count("0 of 2 illustrated · 2 queued") == count
        return len(captured)

    assert queries_with(2) == queries_with(20)
