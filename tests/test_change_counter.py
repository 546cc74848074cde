"""The project's change counter and the poll that costs nothing when nothing changed.

Every family of change a card or the header shows moves Project.version; a tab that shows
the current version gets 204 with no body after one indexed query (plus the session's)."""

import re
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from generation import accounts, engine, fairness, notify, runs, services
from generation.kinds import KINDS
from generation.models import Illustration, ProviderAccount, Run
from generation.providers import account_of, project_provider
from studio import changes, characters, polls
from studio import services as studio_services
from studio.models import Character, Page, Project

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
Status = Illustration.Status


def version(project) -> int:
    return Project.objects.values_list("version", flat=True).get(pk=project.pk)


@contextmanager
def moves(*projects):
    """Assert the block moves each project's change counter."""
    before = [version(p) for p in projects]
    yield
    after = [version(p) for p in projects]
    moved = [b < a for b, a in zip(before, after, strict=True)]
    assert all(moved), f"versions {before} -> {after}"


@contextmanager
def stays(project):
    before = version(project)
    yield
    assert version(project) == before


@pytest.fixture
def book(make_project):
    return make_project(pages=3, title="Counted Book")


@pytest.fixture
def signed_in(client, editor):
    client.force_login(editor)
    return client


def poll_url(html: str) -> str:
    return re.search(r'data-poll hx-get="([^"]+)"', html).group(1).replace("&amp;", "&")


# --- the poll -------------------------------------------------------------------------------


def test_a_tab_at_the_current_version_gets_204_with_no_body_after_one_query(signed_in, book):
    services.generate_missing(project=book)
    html = signed_in.get(reverse("project-detail", args=[book.pk])).content.decode()
    url = poll_url(html)
    assert f"v={version(book)}" in url
    with CaptureQueriesContext(connection) as captured:
        response = signed_in.get(url, headers=HTMX)
    assert response.status_code == 204
    assert response.content == b""
    # The project's version with its owner's password hash (the session's auth check), by
    # primary key: no page is counted. Database sessions add their own row's lookup; with
    # Redis the session comes from the cache.
    sessions = 0 if settings.SESSION_ENGINE.endswith("cached_db") else 1
    assert len(captured) == 1 + sessions
    assert all("django_session" in query["sql"] for query in captured[:sessions])
    assert "studio_project" in captured[-1]["sql"]
    assert "studio_page" not in captured[-1]["sql"]


def test_a_changed_project_answers_with_its_regions_and_the_new_version(signed_in, book, drain):
    run = services.generate_missing(project=book).run
    html = signed_in.get(reverse("project-detail", args=[book.pk])).content.decode()
    url = poll_url(html)
    drain(run.pk, limit=1)
    response = signed_in.get(url, headers=HTMX)
    assert response.status_code == 200
    body = response.content.decode()
    assert f"v={version(book)}" in poll_url(body)
    assert "1 of 3 illustrated" in body
    assert body.count('class="card card--complete"') == 1
    # The next poll at the new version is quiet again.
    assert signed_in.get(poll_url(body), headers=HTMX).status_code == 204


def test_a_quiet_poll_is_no_hint_to_others(client, other_editor, book):
    services.generate_missing(project=book)
    url = reverse("project-poll", args=[book.pk])
    query = {"since": "0", "v": str(version(book))}
    assert client.get(url, query, headers=HTMX).status_code == 302  # anonymous: sign in
    client.force_login(other_editor)
    assert client.get(url, query, headers=HTMX).status_code == 404


def test_a_session_from_before_a_password_change_gets_no_quiet_poll(signed_in, editor, book):
    services.generate_missing(project=book)
    editor.set_password("a-new-password")
    editor.save()
    url = reverse("project-poll", args=[book.pk])
    response = signed_in.get(url, {"since": "0", "v": str(version(book))}, headers=HTMX)
    assert response.status_code == 302


def test_a_bad_version_is_not_quiet(signed_in, book):
    services.generate_missing(project=book)
    url = reverse("project-poll", args=[book.pk])
    response = signed_in.get(url, {"since": "0", "v": "latest"}, headers=HTMX)
    assert response.status_code == 200


# --- every family of change moves the counter ----------------------------------------------


def test_queueing_claiming_and_finishing_jobs_move_it(book, drain):
    with moves(book):
        run = services.generate_missing(project=book).run
    job = Illustration.objects.filter(page__project=book).first()
    with moves(book):
        assert Illustration.objects.filter(pk=job.pk).claim(worker_id="w1", lease=60) == 1
    with stays(book):  # a lease renewal shows nowhere
        Illustration.objects.filter(pk=job.pk).renew(worker_id="w1", lease=60)
    with moves(book):
        Illustration.objects.filter(pk=job.pk).complete(worker_id="w1")
    with moves(book):
        drain(run.pk)


def test_a_claim_through_the_fair_turns_moves_it_and_their_bookkeeping_does_not(book):
    run = services.generate_missing(project=book).run
    with moves(book):
        assert engine.JobWorker(KINDS["illustration"]).claim_next(run.pk) is not None
    with stays(book):  # the run's turn and claim counts show nowhere
        fairness.served(run.pk, conflicts=1)
    assert Run.objects.get(pk=run.pk).claim_conflicts == 1


def test_failures_and_rejections_move_it(book):
    services.generate_missing(project=book)
    first, second = Illustration.objects.filter(page__project=book)[:2]
    for job in (first, second):  # a worker holds each: only the holder fails a job
        Illustration.objects.filter(pk=job.pk).claim(worker_id=f"w{job.pk}", lease=60)
    with moves(book):
        Illustration.objects.filter(pk=first.pk).fail(
            worker_id=f"w{first.pk}", reason="rejected", message="no"
        )
    with moves(book):
        Illustration.objects.filter(pk=second.pk).fail(
            worker_id=f"w{second.pk}", reason="exhausted", message="500"
        )
    with moves(book):
        assert services.retry_failed(project=book).count == 1


def test_a_losing_claim_moves_nothing(book):
    services.generate_missing(project=book)
    job = Illustration.objects.filter(page__project=book).first()
    Illustration.objects.filter(pk=job.pk).claim(worker_id="w1", lease=60)
    with stays(book):
        assert Illustration.objects.filter(pk=job.pk).claim(worker_id="w2", lease=60) == 0


def test_run_controls_move_it(book):
    run = services.generate_missing(project=book).run
    with moves(book):
        services.pause(project=book)
    with moves(book):
        services.resume(project=book)
    job = Illustration.objects.filter(page__project=book).first()
    Illustration.objects.filter(pk=job.pk).claim(worker_id="w1", lease=60)
    with moves(book):
        services.stop(project=book)  # stopping: the call in flight ends
    Illustration.objects.filter(pk=job.pk).complete(worker_id="w1")
    with moves(book):
        runs.settle_run(run.pk)
    assert Run.objects.get(pk=run.pk).state == Run.State.STOPPED


def test_an_end_notice_moves_it(book, drain):
    run = services.generate_missing(project=book).run
    drain(run.pk)
    Run.objects.filter(pk=run.pk).update(end_notice="")
    with moves(book):
        notify.run_ended(run.pk)


def test_an_account_halt_moves_every_project_with_an_open_run(book, make_project):
    other = make_project(pages=2, title="Other Book")
    services.generate_missing(project=book)
    services.generate_missing(project=other)
    idle = make_project(pages=1, title="Idle Book")
    key = account_of(project_provider(book))
    with moves(book, other), stays(idle):
        accounts.halt(key, reason=ProviderAccount.Reason.OUT_OF_CREDITS, message="no credits")
    with moves(book, other):
        services.resume_account(key)


def test_approvals_versions_and_variants_move_it(book, drain):
    drain(services.generate_missing(project=book).run.pk)
    page = book.pages.first()
    with moves(book):
        services.approve_page(page=page)
    with moves(book):
        services.unapprove_page(page=page)
    with moves(book):
        services.approve_all(project=book)
    first = Illustration.objects.get(page=page, status=Status.COMPLETE)
    with moves(book):
        drain(services.queue_page(page=page, regenerate=True).run.pk)
    with moves(book):
        services.use_version(illustration=first)
    newer = Illustration.objects.get(page=page, status=Status.REPLACED)
    with moves(book):
        services.delete_version(illustration=newer)
    with moves(book):
        services.queue_variants(page=page, count=2, confirm_approved=True)


def test_page_edits_reorder_and_sections_move_it(book):
    page = book.pages.first()
    with moves(book):
        page.text = "A new text."
        page.save()
    with moves(book):
        Page.objects.filter(pk=page.pk).update(section="Chapter 1")
    with moves(book):
        studio_services.move_page(page=page, by=1)
    with moves(book):
        studio_services.add_page(project=book, text="One more page.")
    with moves(book):
        studio_services.remove_page(page=book.pages.last())


def test_characters_and_references_that_change_pages_move_it(book):
    with moves(book):
        fox = Character.objects.create(project=book, name="Fox")
    with moves(book):
        fox.pages.add(book.pages.first())
    with moves(book):
        characters.set_page_characters(page=book.pages.last(), characters=[fox])
    with moves(book):
        fox.description = "A red fox with a blue scarf."
        fox.save()
    with moves(book):
        services.draw_sheet(character=fox)
    sheet = fox.sheet_jobs.get()
    rows = type(sheet).objects.filter(pk=sheet.pk)
    rows.claim(worker_id="w1", lease=60)
    with moves(book):  # a sheet job ending (here: failing) shows on the character
        rows.fail(worker_id="w1", reason="exhausted", message="500")


def test_switching_the_service_moves_it(book):
    with moves(book):
        services.switch_service(project=book, service="embedded")


def test_every_row_model_leads_to_the_project_model_through_its_own_relations():
    # studio.changes names no model: "page__project_id" is followed field by field.
    row_models = [model for model in apps.get_models() if hasattr(model, "project_path")]
    assert {model.project_path for model in row_models} >= {
        "project_id",
        "page__project_id",
        "character__project_id",
    }
    assert {changes._project_model(model) for model in row_models} == {Project}


def test_saving_a_project_never_moves_its_counter_back(book):
    stale = Project.objects.get(pk=book.pk)
    Project.objects.mark_changed(book.pk)
    Project.objects.mark_changed(book.pk)
    stale.title = "Renamed"
    stale.save()
    assert version(book) >= 2


def test_a_shared_poll_answer_never_carries_another_browsers_csrf_token(editor, book, drain):
    """Two browsers of one editor poll the same URL at the same version: each gets forms
    whose token its own CSRF cookie accepts (the header's Pause works on both)."""
    run = services.generate_missing(project=book).run
    browsers = [Client(enforce_csrf_checks=True) for _ in range(2)]
    for browser in browsers:
        browser.force_login(editor)
        browser.get(reverse("project-detail", args=[book.pk]))  # its CSRF cookie
    first = browsers[0].get(reverse("project-detail", args=[book.pk]))
    url = poll_url(first.content.decode())  # both tabs poll with this cursor and version
    drain(run.pk, limit=1)  # a new version: the polls render the changed regions
    # Both tabs poll before either presses anything (a press moves the version).
    bodies = [browser.get(url, headers=HTMX).content.decode() for browser in browsers]
    for browser, body in zip(browsers, bodies, strict=True):
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1)
        response = browser.post(
            reverse("project-pause", args=[book.pk]),
            {"csrfmiddlewaretoken": token},
            headers=HTMX,
        )
        assert response.status_code != 403, response.content[:200]


# --- answers shared by the tabs of one browser ------------------------------------------------


def cards_in(body: str) -> list[str]:
    return re.findall(r'<article id="(page-\d+)"', body)


@pytest.fixture
def browser(editor):
    """A signed-in browser that has loaded a page (so it holds a CSRF cookie); its tabs
    send the same cookies."""
    client = Client()
    client.force_login(editor)
    client.get(reverse("project-list"))
    assert settings.CSRF_COOKIE_NAME in client.cookies
    return client


def shared_answers(client, url: str, book) -> polls.SharedAnswers:
    """The shared answers a poll of `url` from this browser reads."""
    request = RequestFactory().get(url, headers=HTMX)
    request.COOKIES = {name: morsel.value for name, morsel in client.cookies.items()}
    request.session = client.session
    polled = polls.polled_project(request, book.pk)
    return polls.SharedAnswers(request, polled, request.COOKIES[settings.CSRF_COOKIE_NAME])


def test_the_tabs_of_one_browser_share_an_answer_made_once(browser, book, drain):
    run = services.generate_missing(project=book).run
    url = poll_url(browser.get(reverse("project-detail", args=[book.pk])).content.decode())
    drain(run.pk, limit=1)
    first = browser.get(url, headers=HTMX)  # the first tab makes the answer
    with CaptureQueriesContext(connection) as captured:
        second = browser.get(url, headers=HTMX)  # another tab, same cursor and version
    assert second.status_code == first.status_code == 200
    assert second.content == first.content
    assert "1 of 3 illustrated" in second.content.decode()
    # The session's check and the project's version; no page is read.
    assert not any("studio_page" in query["sql"] for query in captured)


def test_a_tab_that_has_the_latest_answer_asks_again_at_its_next_poll(browser, book, drain):
    """Answers are made at most once a second: a tab that already shows the latest gets
    204 until the next one is due, then the change."""
    run = services.generate_missing(project=book).run
    url = poll_url(browser.get(reverse("project-detail", args=[book.pk])).content.decode())
    drain(run.pk, limit=1)
    answer = browser.get(url, headers=HTMX)
    next_url = poll_url(answer.content.decode())
    drain(run.pk, limit=1)  # the project moves within the same second
    assert browser.get(next_url, headers=HTMX).status_code == 204
    # A second later (its turn marker gone), the tab's next poll gets the change.
    cache.delete(shared_answers(browser, next_url, book).key + ":making")
    later = browser.get(next_url, headers=HTMX)
    assert later.status_code == 200
    assert "2 of 3 illustrated" in later.content.decode()


def test_a_tab_whose_cursor_is_older_than_shared_answers_reach_gets_its_own(browser, book, drain):
    run = services.generate_missing(project=book).run
    drain(run.pk, limit=1)
    page = browser.get(reverse("project-detail", args=[book.pk])).content.decode()
    old_card = cards_in(page)[0]
    # That card changed a minute ago; the rest just now.
    a_minute_ago = timezone.now() - timedelta(minutes=1)
    first_page = Page.objects.get(pk=int(old_card.removeprefix("page-")))
    Illustration.objects.filter(page=first_page).update(updated_at=a_minute_ago)
    Page.objects.filter(pk=first_page.pk).update(updated_at=a_minute_ago)
    url = poll_url(page)
    Project.objects.mark_changed(book.pk)
    fresh = browser.get(url, headers=HTMX).content.decode()  # the shared answer
    assert old_card not in cards_in(fresh)
    # A tab asleep for two minutes comes back with its old cursor and version.
    since = (timezone.now() - timedelta(minutes=2)).timestamp()
    asleep = url.replace(re.search(r"since=[\d.]+", url).group(0), f"since={since:.3f}")
    asleep = re.sub(r"v=\d+", "v=1", asleep)
    answer = browser.get(asleep, headers=HTMX).content.decode()
    assert old_card in cards_in(answer)
