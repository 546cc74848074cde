"""Operators' tools: management commands and the Django admin, with exact counts."""

import json
import logging
import re
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule

from generation import services
from generation.apps import SWEEP_SCHEDULE_NAME, register_sweep_schedule
from generation.models import GenerationAttempt, Illustration, Run
from studio.models import Project

Status = Illustration.Status


def run_command(name, *args) -> str:
    from io import StringIO

    out = StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


def halted_project(make_project, fake_openai, drain, pages=24):
    project = make_project(pages=pages)
    fake_openai.default = "402"
    drain(services.generate_missing(project=project).run.pk)
    fake_openai.default = "ok"
    return project


# --- generation_status ------------------------------------------------------------------


@pytest.mark.django_db
def test_status_json_has_the_documented_shape(make_project, openai_settings, fake_openai, drain):
    fresh = make_project(pages=3, title="Fresh")
    halted = halted_project(make_project, fake_openai, drain)
    data = json.loads(run_command("generation_status", "--json"))
    assert data["projects"][0] == {
        "id": fresh.pk,
        "title": "Fresh",
        "pages": 3,
        "illustrated": 0,
        "missing": 3,
        "failed": 0,
        "active": 0,
        "cost": {"project": "0.0000", "run": "0.0000"},
        "ledger": {"paid_calls": 0, "unconfirmed_calls": 0, "spent": "0.0000"},
        "run": None,
        # The other project's 402 halted the account both draw through.
        "account": {"state": "halted", "reason": "out_of_credits", "until": None},
    }
    second = data["projects"][1]
    assert second["id"] == halted.pk
    assert (second["missing"], second["active"], second["failed"]) == (24, 24, 0)
    assert second["run"]["state"] == "halted"
    assert second["run"]["halt_reason"] == "out_of_credits"
    assert second["run"]["message"].startswith("The image service (openai) says the account is out")

    only = json.loads(run_command("generation_status", "--project", str(fresh.pk), "--json"))
    assert [p["id"] for p in only["projects"]] == [fresh.pk]


@pytest.mark.django_db
def test_status_json_counts_a_queued_regeneration_as_active(make_project, drain):
    project = make_project(pages=2)
    drain(services.generate_missing(project=project).run.pk)
    services.queue_page(page=project.pages.get(number=1), regenerate=True)

    [status] = json.loads(run_command("generation_status", "--json"))["projects"]
    assert (status["illustrated"], status["missing"], status["active"]) == (2, 0, 1)


@pytest.mark.django_db
def test_status_json_reports_the_ledger_of_paid_and_unconfirmed_calls(
    make_project, openai_settings, fake_openai, drain
):
    openai_settings.STUDIO_PRICES = {"openai:gpt-image-1": "0.04"}
    fake_openai.script.append("cut")  # the first answer breaks off: most likely charged
    project = make_project(pages=2)
    drain(services.generate_missing(project=project).run.pk)

    [status] = json.loads(run_command("generation_status", "--json"))["projects"]
    assert status["ledger"] == {"paid_calls": 2, "unconfirmed_calls": 1, "spent": "0.1200"}


@pytest.mark.django_db
def test_status_table_names_every_column_and_halts(
    make_project, openai_settings, fake_openai, drain
):
    project = halted_project(make_project, fake_openai, drain)
    out = run_command("generation_status")
    assert out.splitlines()[0].split() == [
        "ID",
        "Title",
        "Pages",
        "Illustrated",
        "Missing",
        "Failed",
        "Active",
        "Run",
        "Halt",
        "reason",
    ]
    assert (
        f"Project {project.pk}: The image service (openai) says the account is out of credits"
        in out
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("generation_status", ["--project", "999"], "no project with id 999"),
        ("resume_generation", [], "name projects with --project ID (repeatable) or pass --all"),
        ("resume_generation", ["--all", "--project", "1"], "use --project ID or --all, not both"),
        ("retry_failed", [], "name projects with --project ID"),
        ("stop_generation", [], "name projects with --project ID"),
        ("pause_generation", ["--project", "12345"], "no project with id 12345"),
    ],
)
def test_bad_usage_exits_2_with_one_line(command, args, message):
    with pytest.raises(CommandError, match=re.escape(message)) as raised:
        call_command(command, *args)
    assert raised.value.returncode == 2


def test_from_the_shell_a_bad_argument_exits_2_with_one_line():
    from tests.conftest import ROOT

    result = subprocess.run(
        [sys.executable, "manage.py", "resume_generation", "--project", "seven"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "manage.py resume_generation: error: argument --project: invalid int value: 'seven'"
    ]


# --- resume_generation ---------------------------------------------------------------------


class LogLines(logging.Handler):
    """The log lines a command prints to the terminal: django-q's own and the studio's."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(f"{record.name} {record.levelname} {record.getMessage()}")

    def __enter__(self):
        for name in ("django-q", "generation"):
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc):
        for name in ("django-q", "generation"):
            logging.getLogger(name).removeHandler(self)


def paused_project(make_project, pages=4, title="Paused"):
    project = make_project(pages=pages, title=title)
    services.generate_missing(project=project)
    services.pause(project=project)
    return project


@pytest.mark.django_db(transaction=True)  # its tasks reach the broker as the command runs
def test_resume_all_resumes_only_what_was_halted_or_paused_in_one_line_each(
    make_project, openai_settings, fake_openai, drain, broker
):
    done = make_project(pages=2, title="Done")
    drain(services.generate_missing(project=done).run.pk)
    halted = halted_project(make_project, fake_openai, drain, pages=6)
    paused = paused_project(make_project)
    never = make_project(pages=5, title="Never generated")

    broker.purge_queue()  # the tasks of the work set up above
    with LogLines() as logs:
        out = run_command("resume_generation", "--all")

    assert out.splitlines() == [
        f"Project {halted.pk} (A Book): the halted run (out of credits) is running again; "
        "6 jobs wait for the workers.",
        f"Project {paused.pk} (Paused): the paused run is running again; 4 jobs wait for the "
        "workers.",
    ]
    assert logs.lines == []  # no "[Q] INFO Enqueued" per job, no event per run
    assert not never.pages.filter(illustrations__isnull=False).exists()  # nobody asked
    assert not Run.objects.filter(project=never).exists()
    assert broker.queue_size() == 10  # the tasks of the jobs resumed, and no other
    assert run_command("resume_generation", "--all").splitlines() == [
        "Nothing was halted or paused: nothing to resume."
    ]


@pytest.mark.django_db
def test_dry_run_says_what_it_would_do_and_changes_nothing(
    make_project, openai_settings, fake_openai, drain
):
    project = halted_project(make_project, fake_openai, drain)
    paused = paused_project(make_project)
    fresh = make_project(pages=5, title="Untouched")
    job = Illustration.objects.filter(page__project=project).first()
    Illustration.objects.filter(pk=job.pk).update(
        status=Status.GENERATING, claimed_by="dead", lease_expires_at=timezone.now() - timedelta(1)
    )
    before = (
        list(Illustration.objects.values_list("pk", "status")),
        list(Run.objects.values_list("pk", "state")),
    )

    everything = run_command("resume_generation", "--all", "--dry-run")
    named = run_command("resume_generation", "--project", str(fresh.pk), "--dry-run")

    assert everything.splitlines() == [
        "Would reclaim 1 job(s) from expired leases.",
        f"Project {project.pk} (A Book): would set the halted run (out of credits) running "
        "again; 24 jobs would wait for the workers.",
        f"Project {paused.pk} (Paused): would set the paused run running again; 4 jobs would "
        "wait for the workers.",
        "Dry run: nothing was changed.",
    ]
    assert named.splitlines() == [
        "Would reclaim 1 job(s) from expired leases.",
        f"Project {fresh.pk} (Untouched): would queue 5 pictures.",
        "Dry run: nothing was changed.",
    ]
    after = (
        list(Illustration.objects.values_list("pk", "status")),
        list(Run.objects.values_list("pk", "state")),
    )
    assert after == before


@pytest.mark.django_db
def test_resume_reclaims_leases_resumes_halted_runs_and_queues_the_named_projects_missing(
    make_project, openai_settings, fake_openai, drain
):
    project = halted_project(make_project, fake_openai, drain)
    other = make_project(pages=5, title="Other")
    job = Illustration.objects.filter(page__project=project).first()
    Illustration.objects.filter(pk=job.pk).update(
        status=Status.GENERATING, claimed_by="dead", lease_expires_at=timezone.now() - timedelta(1)
    )
    out = run_command("resume_generation", "--project", str(project.pk), "--project", str(other.pk))
    assert out.splitlines() == [
        "Reclaimed 1 job(s) from expired leases.",
        f"Project {project.pk} (A Book): the halted run (out of credits) is running again; "
        "24 jobs wait for the workers.",
        f"Project {other.pk} (Other): queued 5 pictures; 5 jobs wait for the workers.",
    ]
    assert Run.objects.get(project=project).state == Run.State.RUNNING
    assert Illustration.objects.filter(status=Status.QUEUED).count() == 29


@pytest.mark.django_db
def test_bulk_resume_over_a_hundred_projects(make_project):
    for n in range(100):
        paused_project(make_project, pages=3, title=f"Book {n}")
    out = run_command("resume_generation", "--all")
    assert len(out.splitlines()) == 100
    assert Illustration.objects.filter(status=Status.QUEUED).count() == 300
    assert Run.objects.filter(state=Run.State.RUNNING).count() == 100


@pytest.mark.django_db
def test_retry_stop_and_pause_commands(make_project):
    project = make_project(pages=4)
    for page in project.pages.all()[:3]:
        Illustration.objects.create(page=page, status=Status.FAILED, failure_reason="exhausted")
    out = run_command("retry_failed", "--project", str(project.pk))
    assert out.strip().endswith("Retrying 3 failed pages.")
    assert (
        run_command("pause_generation", "--project", str(project.pk)).strip().endswith(": paused")
    )
    assert (
        run_command("stop_generation", "--project", str(project.pk)).strip().endswith(": stopped")
    )
    assert Illustration.objects.filter(status=Status.CANCELED).count() == 3
    assert (
        run_command("stop_generation", "--project", str(project.pk))
        .strip()
        .endswith(": nothing to stop")
    )


@pytest.mark.django_db(transaction=True)
def test_follow_shows_progress_until_done_and_exits_0(make_project, qcluster):
    project = make_project(pages=12)
    qcluster(STUDIO_WORKERS=2)
    out = run_command(
        "resume_generation", "--project", str(project.pk), "--follow", "--interval", "0.2"
    )
    assert out.splitlines()[-1] == f"[{'#' * 30}] 12/12 illustrated · 0 active · 0 failed"


@pytest.mark.django_db(transaction=True)
def test_follow_exits_1_when_pages_fail(make_project, qcluster, fake_openai):
    from tests.conftest import openai_env

    project = make_project(pages=4)
    fake_openai.rules.append(("meadow number 2.", "400_policy"))
    qcluster(**openai_env(fake_openai, STUDIO_WORKERS=2))
    with pytest.raises(CommandError, match="Some pages failed") as raised:
        run_command(
            "resume_generation", "--project", str(project.pk), "--follow", "--interval", "0.2"
        )
    assert raised.value.returncode == 1


# --- the sweep's schedule -----------------------------------------------------------------


@pytest.mark.django_db
def test_the_sweep_is_scheduled_exactly_once():
    register_sweep_schedule(sender=None)
    register_sweep_schedule(sender=None)
    [schedule] = Schedule.objects.filter(func="generation.tasks.sweep")
    assert (schedule.name, schedule.schedule_type, schedule.minutes) == (
        SWEEP_SCHEDULE_NAME,
        Schedule.MINUTES,
        1,
    )


# --- admin ---------------------------------------------------------------------------------


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_superuser("operator", "op@example.com", "op-password")
    client.force_login(user)
    return client


def post_action(client, model: str, action: str, pks) -> str:
    url = reverse(f"admin:{model}_changelist")
    response = client.post(
        url, {"action": action, "_selected_action": [str(pk) for pk in pks]}, follow=True
    )
    assert response.status_code == 200
    return [str(m) for m in response.context["messages"]][-1]


@pytest.mark.django_db
def test_admin_project_actions_go_through_the_services_with_exact_counts(staff, make_project):
    projects = [make_project(pages=3, title=f"Book {n}") for n in range(100)]
    pks = [p.pk for p in projects]
    assert post_action(staff, "studio_project", "generate_missing", pks) == (
        "Queued 300 illustrations across 100 projects."
    )
    assert post_action(staff, "studio_project", "generate_missing", pks) == (
        "Queued 0 illustrations across 0 projects."
    )
    assert post_action(staff, "studio_project", "pause", pks[:2]) == "Paused 2 runs."
    assert post_action(staff, "studio_project", "resume", pks[:3]) == "Resumed 2 runs."
    assert post_action(staff, "studio_project", "stop", pks[:7]) == "Stopped 7 runs."
    Illustration.objects.filter(page__project_id=pks[0]).update(
        status=Status.FAILED, failure_reason="exhausted"
    )
    assert post_action(staff, "studio_project", "retry_failed", pks[:2]) == (
        "Retrying 3 failed illustrations across 1 project."
    )


@pytest.mark.django_db
def test_admin_illustration_actions(staff, make_project, drain):
    project = make_project(pages=3)
    drain(services.generate_missing(project=project).run.pk)
    jobs = list(Illustration.objects.order_by("pk"))
    assert post_action(staff, "generation_illustration", "retry_selected", [jobs[0].pk]) == (
        "Queued 0 illustrations."
    )  # it has its picture already
    assert (
        post_action(
            staff, "generation_illustration", "regenerate_selected", [j.pk for j in jobs[:2]]
        )
        == "Queued 2 illustrations to draw again."
    )
    assert Illustration.objects.filter(status=Status.QUEUED).count() == 2


@pytest.mark.django_db
def test_admin_pages_show_thumbnails_and_keep_attempts_read_only(staff, make_project, drain):
    project = make_project(pages=2)
    drain(services.generate_missing(project=project).run.pk)
    job = Illustration.objects.first()
    html = staff.get(reverse("admin:generation_illustration_changelist")).content.decode()
    thumb = reverse("admin:generation_illustration_thumbnail", args=[job.pk])
    assert thumb in html
    assert staff.get(thumb)["Content-Type"] == "image/webp"
    assert staff.get(reverse("admin:generation_generationattempt_add")).status_code == 403
    attempt = GenerationAttempt.objects.first()
    change = staff.get(reverse("admin:generation_generationattempt_change", args=[attempt.pk]))
    assert change.status_code == 200 and "Save" not in change.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "model", ["studio_project", "generation_illustration", "generation_generationattempt"]
)
def test_admin_lists_take_the_same_queries_for_5_or_50_rows(staff, make_project, drain, model):
    def queries_with(projects: int) -> int:
        for _ in range(projects - Project.objects.count()):
            project = make_project(pages=1)
            drain(services.generate_missing(project=project).run.pk)
        with CaptureQueriesContext(connection) as captured:
            assert staff.get(reverse(f"admin:{model}_changelist")).status_code == 200
        return len(captured)

    assert queries_with(5) == queries_with(50)


@pytest.mark.django_db
def test_the_admin_project_list_shows_what_each_project_spent(
    staff, make_project, openai_settings, fake_openai, drain
):
    paid = make_project(pages=4, title="Paid for")
    drain(services.generate_missing(project=paid).run.pk)  # 4 × $0.042
    make_project(pages=2, title="Not started")
    html = staff.get(reverse("admin:studio_project_changelist")).content.decode()
    assert '<th scope="col" class="sortable column-cost">' in html
    rows = re.findall(r'field-title"><a [^>]*>([^<]+)</a>.*?field-cost">([^<]+)<', html, re.S)
    assert sorted(rows) == [("Not started", "$0.00"), ("Paid for", "$0.17")]


@pytest.mark.django_db
def test_admin_project_list_counts(staff, make_project, openai_settings, fake_openai, drain):
    project = make_project(pages=4, title="Counted")
    fake_openai.rules.append(("meadow number 2.", "400_policy"))
    drain(services.generate_missing(project=project).run.pk)
    response = staff.get(reverse("admin:studio_project_changelist"))
    row = response.context["cl"].result_list[0]
    counts = (row.page_count, row.illustrated_count, row.failed_count, row.rejected_count)
    assert (*counts, row.run_state) == (
        4,
        3,
        0,  # the rejected page is counted apart: "Retry failed" leaves it alone
        1,
        "finished",
    )
    filtered = staff.get(reverse("admin:studio_project_changelist") + "?run_state=halted")
    assert list(filtered.context["cl"].result_list) == []
