"""Account-level failures belong to the account: shared halts, a self-healing outage
breaker, rate limits that wait, and errors read the way real services and gateways send
them. Real HTTP against the loopback fake; real clusters where workers are the point."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from generation import accounts, runs, services
from generation.clock import db_now
from generation.models import GenerationAttempt, Illustration, ProviderAccount, Run
from generation.providers import account_of, get_provider
from generation.providers.base import (
    AuthFailed,
    ConfigError,
    ImageRequest,
    OutOfCredits,
    RateLimited,
    Rejected,
    Transient,
)
from generation.providers.http import parse_retry_after
from generation.providers.openai import OpenAIProvider
from tests.conftest import TEST_API_KEY, openai_env, wait_until

Status = Illustration.Status
REQUEST = ImageRequest(prompt="a fox", size="1024x1024", seed=1, idempotency_key="k")


def start(project):
    return services.generate_missing(project=project).run


@pytest.fixture
def two_books(make_project, openai_settings):
    return make_project(pages=4, title="Book A"), make_project(pages=4, title="Book B")


# --- 1. out of credits, a refused key and configuration halt the account ----------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("reply", "reason"),
    [("402", "out_of_credits"), ("401", "auth"), ("404_model", "config")],
)
def test_one_refusal_halts_every_project_on_the_account_and_one_resume_continues_all(
    two_books, fake_openai, drain, reply, reason
):
    book_a, book_b = two_books
    run_a, run_b = start(book_a), start(book_b)
    fake_openai.script.append(reply)
    assert drain(run_a.pk) == 1  # the refused call
    drain(run_b.pk)  # the other project on the same key calls nothing

    assert fake_openai.call_count == 1
    key = account_of(get_provider())
    # A wrong model is the model's, not the key's: it halts the work using it (issue 29).
    halted_by = accounts.config_key("illustration", key) if reason == "config" else key
    for run in (run_a, run_b):
        run.refresh_from_db()
        assert (run.state, run.halt_reason) == ("halted", reason)
        assert run.halted_account == halted_by
    halted = list(ProviderAccount.objects.filter(state="halted").values_list("reason", flat=True))
    assert halted == ([] if reason == "config" else [reason])
    assert not Illustration.objects.filter(status=Status.FAILED).exists()

    services.resume(project=book_b)  # one Resume, on either project
    for run in (run_a, run_b):
        run.refresh_from_db()
        assert run.state == Run.State.RUNNING
    drain(run_a.pk)  # workers take turns between the projects: both are worked
    assert not ProviderAccount.objects.exclude(state="ok").exists()
    assert Illustration.objects.filter(status=Status.COMPLETE).count() == 8
    assert fake_openai.call_count == 1 + 8  # the refused call, then each page once


@pytest.mark.django_db
def test_the_service_words_of_a_halt_are_shown_only_on_the_project_whose_call_it_was(
    two_books, fake_openai, drain, client
):
    # Issue 30, item 6: the service's error text can quote one editor's prompt.
    book_a, book_b = two_books
    book_a.pages.filter(number=1).update(prompt="Confidential plot twist: the fox is king")
    run_a, run_b = start(book_a), start(book_b)
    fake_openai.script.append("402_echo_prompt")
    drain(run_a.pk)
    drain(run_b.pk)
    run_a.refresh_from_db()
    run_b.refresh_from_db()
    assert (run_a.state, run_b.state) == ("halted", "halted")
    assert "Confidential plot twist" in run_a.message
    assert "Confidential plot twist" not in run_b.message
    client.force_login(book_a.owner)
    own = client.get(reverse("project-detail", args=[book_a.pk])).content.decode()
    other = client.get(reverse("project-detail", args=[book_b.pk])).content.decode()
    assert "Confidential plot twist" in own
    assert "Confidential plot twist" not in other
    assert "out of credits" in other.lower()
    ProviderAccount.objects.update(message=run_a.message)  # the account keeps the full text
    Run.objects.filter(pk=run_b.pk).update(state=Run.State.RUNNING)  # shown from the account
    other = client.get(reverse("project-detail", args=[book_b.pk])).content.decode()
    assert "Confidential plot twist" not in other


@pytest.mark.django_db
def test_a_refusal_of_a_call_that_started_before_a_resume_halts_nothing(
    two_books, fake_openai, drain
):
    """Four workers call at once; one call finds the account out of credits and halts it;
    the editor adds credits and presses Resume; then another call that had started before
    the Resume comes back refused. The Resume has answered it: nothing halts again."""
    book_a, book_b = two_books
    run_a = start(book_a)
    start(book_b)
    key = account_of(get_provider())
    started_before_resume = db_now()
    fake_openai.script.append("402")
    drain(run_a.pk, limit=1)
    assert ProviderAccount.objects.get().state == "halted"
    services.resume(project=book_a)

    refused = {
        "reason": "out_of_credits",
        "message": "Out of credits (HTTP 402).",
        "provider": get_provider(),
    }
    assert runs.halt_account(key, **refused, call_started=started_before_resume) == 0
    assert ProviderAccount.objects.get().state == "ok"
    assert set(Run.objects.values_list("state", flat=True)) == {"running"}

    # A call that started after the Resume and is refused halts the account again.
    assert runs.halt_account(key, **refused, call_started=db_now()) == 2
    assert ProviderAccount.objects.get().state == "halted"
    assert set(Run.objects.values_list("state", flat=True)) == {"halted"}


@pytest.mark.django_db
def test_a_configuration_error_halts_once_and_names_the_setting(
    make_project, openai_settings, fake_openai, drain
):
    openai_settings.STUDIO_IMAGE_MODEL = "gpt-imgae-1"
    fake_openai.default = "404_model"
    run = start(make_project(pages=24))
    drain(run.pk)
    run.refresh_from_db()
    assert fake_openai.call_count == 1  # not 24 pages failed one by one
    assert (run.state, run.halt_reason) == ("halted", "config")
    assert run.message == (
        "The image service does not know the model 'gpt-imgae-1' (HTTP 404). "
        "Fix STUDIO_IMAGE_MODEL, then press Resume. The project's Settings offer gpt-image-2 "
        "in one click; the run then continues with it."
    )
    assert not Illustration.objects.filter(status=Status.FAILED).exists()


@pytest.mark.django_db
def test_the_header_json_and_admin_show_the_account(
    client, admin_client, editor, two_books, fake_openai, drain
):
    book_a, book_b = two_books
    fake_openai.default = "402"
    drain(start(book_a).pk)
    start(book_b)

    client.force_login(editor)
    html = client.get(book_b.get_absolute_url()).content.decode()
    assert "halted (out of credits)" in html
    assert "Resume continues every project on it" in html

    out = StringIO()
    call_command("generation_status", "--json", stdout=out)
    states = {p["title"]: p["account"] for p in json.loads(out.getvalue())["projects"]}
    assert states["Book B"] == {"state": "halted", "reason": "out_of_credits", "until": None}

    changelist = reverse("admin:generation_provideraccount_changelist")
    assert "halted" in admin_client.get(changelist).content.decode()
    fake_openai.default = "ok"
    account = ProviderAccount.objects.get()
    admin_client.post(changelist, {"action": "resume", "_selected_action": [account.pk]})
    assert ProviderAccount.objects.get().state == "ok"
    assert set(Run.objects.values_list("state", flat=True)) == {"running"}


@pytest.mark.django_db
def test_status_reads_the_account_a_run_used_not_the_shells_environment(
    settings, client, editor, two_books, fake_openai, drain
):
    book_a, book_b = two_books
    fake_openai.default = "402"
    run = start(book_a)
    drain(run.pk)
    run.refresh_from_db()
    assert run.account == ProviderAccount.objects.get().key  # the account it called

    # A shell without OPENAI_API_KEY: its own environment names another account (no key).
    settings.OPENAI_API_KEY = ""
    out = StringIO()
    call_command("generation_status", "--project", str(book_a.pk), "--json", stdout=out)
    [status] = json.loads(out.getvalue())["projects"]
    assert status["account"] == {"state": "halted", "reason": "out_of_credits", "until": None}
    client.force_login(editor)
    html = client.get(book_a.get_absolute_url()).content.decode()
    assert "halted (out of credits)" in html  # the page and the command agree
    out = StringIO()
    call_command("resume_generation", "--project", str(book_a.pk), stdout=out)
    assert ProviderAccount.objects.get().state == "ok"  # it resumed the account the run used


@pytest.mark.django_db
def test_the_worker_that_calls_names_the_runs_account(settings, two_books, fake_openai, drain):
    book_a, _ = two_books
    settings.OPENAI_API_KEY = ""  # started from a shell without the key
    run = start(book_a)
    assert run.account.endswith("|no-key")
    settings.OPENAI_API_KEY = TEST_API_KEY  # the workers have it
    drain(run.pk, limit=1)
    run.refresh_from_db()
    assert (
        run.account == account_of(get_provider("openai")) == GenerationAttempt.objects.get().account
    )


# --- 2. an outage breaker per account that heals itself ----------------------------------


@pytest.mark.django_db
def test_the_outage_breaker_counts_failures_across_projects(
    settings, two_books, fake_openai, drain
):
    settings.STUDIO_OUTAGE_THRESHOLD = 3
    settings.STUDIO_MAX_ATTEMPTS = 1
    book_a, book_b = two_books
    fake_openai.default = "500"
    run_a, run_b = start(book_a), start(book_b)
    drain(run_a.pk, limit=2)  # two failures on project A
    drain(run_b.pk, limit=1)  # the third, on project B, trips the account
    assert fake_openai.call_count == 3  # not 3 each
    assert set(Run.objects.values_list("state", "halt_reason")) == {("halted", "outage")}
    account = ProviderAccount.objects.get()
    assert account.next_probe_at > db_now() + timedelta(seconds=25)


@pytest.mark.django_db
def test_a_success_anywhere_resets_the_count(settings, two_books, fake_openai, drain):
    settings.STUDIO_OUTAGE_THRESHOLD = 10
    settings.STUDIO_MAX_ATTEMPTS = 1
    fake_openai.script.extend(["500", "ok", "500", "500"])
    run = start(two_books[0])
    drain(run.pk, limit=4)
    assert ProviderAccount.objects.get().failures_in_row == 2  # fail, success, fail, fail


@pytest.mark.django_db
def test_an_outage_probes_by_itself_and_resumes_every_run_it_halted(
    settings, two_books, fake_openai, drain, broker
):
    settings.STUDIO_OUTAGE_THRESHOLD = 2
    book_a, book_b = two_books
    run_a, run_b = start(book_a), start(book_b)
    fake_openai.default = "503"
    drain(run_a.pk)
    assert set(Run.objects.values_list("state", flat=True)) == {"halted"}
    key = ProviderAccount.objects.get().key

    # Not yet due: the sweep leaves it.
    assert services.sweep()["probes"] == 0
    # The first probe, 30 s later: the service is still down.
    ProviderAccount.objects.update(next_probe_at=db_now() - timedelta(seconds=1))
    assert services.sweep()["probes"] == 1
    drain(run_a.pk)
    drain(run_b.pk)
    account = ProviderAccount.objects.get()
    assert (account.state, account.probes) == ("halted", 1)
    assert account.next_probe_at > db_now() + timedelta(seconds=55)  # then a minute
    assert accounts.probe_interval(5) == 900 and accounts.probe_interval(9) == 900

    # The next probe finds it back: nobody presses anything.
    fake_openai.default = "ok"
    calls = fake_openai.call_count
    ProviderAccount.objects.update(next_probe_at=db_now() - timedelta(seconds=1))
    assert services.sweep()["probes"] == 1
    drain(run_a.pk)
    drain(run_b.pk)
    assert ProviderAccount.objects.get(key=key).state == "ok"
    assert Illustration.objects.filter(status=Status.COMPLETE).count() == 8
    assert fake_openai.call_count == calls + 8
    assert set(Run.objects.values_list("state", flat=True)) == {"finished"}


@pytest.mark.django_db
def test_credits_auth_and_config_never_resume_by_themselves(two_books, fake_openai, drain):
    fake_openai.script.append("402")
    drain(start(two_books[0]).pk)
    ProviderAccount.objects.update(next_probe_at=db_now() - timedelta(seconds=1))
    assert services.sweep()["probes"] == 0
    assert ProviderAccount.objects.get().state == "halted"


# --- 3. rate limits are waiting, not failing ------------------------------------------------


@pytest.mark.django_db
def test_rate_limits_never_trip_the_outage_breaker_nor_use_up_attempts(
    settings, make_project, openai_settings, fake_openai, drain
):
    settings.STUDIO_OUTAGE_THRESHOLD = 6
    fake_openai.script.extend(["429_brief"] * 7)
    run = start(make_project(pages=1))
    drain(run.pk)
    run.refresh_from_db()
    job = Illustration.objects.get()
    assert (run.state, job.status, job.attempts_made) == ("finished", Status.COMPLETE, 1)
    assert [a.outcome for a in job.attempts.all()] == ["rate_limited"] * 7 + ["success"]
    assert ProviderAccount.objects.get().failures_in_row == 0


@pytest.mark.django_db
def test_a_page_rate_limited_past_the_patience_fails_saying_so(
    settings, make_project, openai_settings, fake_openai, drain
):
    settings.STUDIO_RATE_LIMIT_PATIENCE = 0.1
    fake_openai.default = "429_brief"
    run = start(make_project(pages=1))
    drain(run.pk)
    job = Illustration.objects.get()
    assert (job.status, job.failure_reason) == (Status.FAILED, "exhausted")
    assert job.error_message.startswith("Rate limited for 0 minutes")
    assert job.attempts.count() >= 2


@pytest.mark.django_db
@pytest.mark.parametrize("reply", ["429_absurd", "429_far_future"])
def test_absurd_retry_after_values_never_crash_a_worker(
    make_project, openai_settings, fake_openai, drain, reply
):
    fake_openai.script.append(reply)
    run = start(make_project(pages=1))
    drain(run.pk)
    job = Illustration.objects.get()
    assert (job.status, job.attempts_made) == (Status.QUEUED, 0)  # back in the queue
    assert (
        db_now() + timedelta(minutes=29) < job.next_attempt_at <= db_now() + timedelta(minutes=31)
    )  # capped by the patience, not 1e400 seconds


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after": "1e400"}, 3600.0),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "Fri, 31 Dec 2100 23:59:59 GMT"}, 3600.0),
        ({"retry-after": "Thu, 01 Jan 1970 00:00:00 GMT"}, 0.0),
        ({"retry-after": "soon"}, None),
    ],
)
def test_retry_after_is_read_in_every_form_and_clamped(headers, seconds):
    assert parse_retry_after(headers) == seconds


# --- 4. errors as real services and gateways send them ----------------------------------


@pytest.mark.parametrize(
    ("reply", "error_class", "retry_after"),
    [
        ("429_gateway_quota", OutOfCredits, None),  # a gateway's own code, the upstream's words
        ("403_locked", OutOfCredits, None),  # fal: "User is locked. Reason: Exhausted balance"
        ("400_billing_not_active", OutOfCredits, None),
        ("404_model", ConfigError, None),
        ("404_route", ConfigError, None),
        ("400_size", ConfigError, None),
        ("403_html", Transient, None),  # a proxy's page is not the service refusing the key
        ("502_html", Transient, None),
        ("200_error", Transient, None),  # in-band failure after the model started
        ("200_refusal", Rejected, None),
        ("200_no_image", Transient, None),
        ("503_retry_after", Transient, 2.0),
        ("529", Transient, 1.5),
        ("429_rate", RateLimited, 3.0),
        ("401", AuthFailed, None),
    ],
)
def test_errors_are_classified_by_status_body_and_wording(
    openai_settings, fake_openai, reply, error_class, retry_after
):
    fake_openai.default = reply
    with pytest.raises(error_class) as raised:
        OpenAIProvider().generate(REQUEST)
    assert type(raised.value) is error_class
    assert raised.value.retry_after == retry_after


def test_config_errors_name_the_setting_to_fix(openai_settings, fake_openai):
    for reply, setting in [
        ("404_model", "STUDIO_IMAGE_MODEL"),
        ("404_route", "OPENAI_BASE_URL"),
        ("400_size", "STUDIO_IMAGE_SIZE"),
    ]:
        fake_openai.default = reply
        with pytest.raises(ConfigError) as raised:
            OpenAIProvider().generate(REQUEST)
        assert raised.value.setting == setting


@pytest.mark.django_db
def test_halt_messages_name_the_clip_services_setting(
    make_project, replicate_settings, fake_predictions, drain
):
    project = make_project(pages=1)
    drain(start(project).pk)  # the offline renderer draws the picture
    fake_predictions.create_script.append("401")
    run = services.generate_missing_clips(project=project).run
    drain(run.pk, kind="clip")
    run.refresh_from_db()
    assert "Check REPLICATE_API_TOKEN" in run.message
    assert "OPENAI_API_KEY" not in run.message


# --- workers: three projects on one key, real clusters ----------------------------------------


@pytest.mark.django_db(transaction=True)
def test_real_workers_stop_calling_for_every_project_once_the_account_is_out_of_credits(
    make_project, fake_openai, qcluster
):
    books = [make_project(pages=8, title=f"Book {n}") for n in range(3)]
    fake_openai.default = "402"
    qcluster(**openai_env(fake_openai, STUDIO_WORKERS=4))
    for book in books:
        start(book)
    wait_until(lambda: set(Run.objects.values_list("state", flat=True)) == {"halted"}, timeout=30)
    wait_until(lambda: fake_openai.in_flight == 0, timeout=10)
    assert fake_openai.call_count - 1 <= 4  # calls after the halting one: at most the workers
    assert not GenerationAttempt.objects.filter(outcome="success").exists()

    fake_openai.default = "ok"
    calls = fake_openai.call_count
    services.resume(project=books[0])
    wait_until(
        lambda: Illustration.objects.filter(status=Status.COMPLETE).count() == 24, timeout=60
    )
    assert fake_openai.call_count - calls == 24  # every page once: nothing queued twice
