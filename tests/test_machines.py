"""The three state machines are tables (generation.machines): walk every transition from
every state, with its guards holding and then failing, and check that the one UPDATE it
makes moves exactly the rows the table says."""

from datetime import timedelta

import pytest
from django.db.models.functions import Now

from generation.clock import db_now
from generation.machines import ACCOUNT, JOB, RUN
from generation.models import Illustration, ProviderAccount, Run

WORKER = "worker-1"


def job_in(state, *, run, page, guards):
    """A job in the state, with every guard of the transition holding."""
    lease = timedelta(seconds=60 if "fresh" in guards else -60)
    overdue = db_now() - timedelta(seconds=1) if "overdue" in guards else None
    return Illustration.objects.create(
        page=page,
        run=run,
        status=state,
        variant=0,
        claimed_by=WORKER,
        lease_expires_at=db_now() + lease,
        next_attempt_at=overdue,
    )


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(JOB.transitions))
def test_each_job_transition_moves_exactly_its_source_states(name, make_project):
    transition = JOB.transitions[name]
    project = make_project(pages=len(JOB.states))
    pages = list(project.pages.order_by("number"))
    over = "run_over" in transition.guards
    run = Run.objects.create(project=project, state="stopping" if over else "running")
    jobs = {
        state: job_in(state, run=run, page=page, guards=transition.guards)
        for state, page in zip(JOB.states, pages, strict=True)
    }
    context = {"worker_id": WORKER, "now": db_now()}
    for state, job in jobs.items():
        rows = Illustration.objects.filter(pk=job.pk)
        moved = JOB.move(rows, name, context=context, updated_at=Now())
        assert moved == (state in transition.sources), (name, state)
        if moved and transition.target:
            assert rows.get().status == transition.target


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name", sorted(name for name, t in JOB.transitions.items() if "held" in t.guards)
)
def test_a_job_transition_that_needs_the_claim_moves_nothing_for_another_worker(name, make_project):
    transition = JOB.transitions[name]
    project = make_project(pages=1)
    over = "run_over" in transition.guards
    run = Run.objects.create(project=project, state="stopping" if over else "running")
    source = sorted(transition.sources)[0]
    job = job_in(source, run=run, page=project.pages.get(), guards=transition.guards)
    rows = Illustration.objects.filter(pk=job.pk)
    assert JOB.move(rows, name, context={"worker_id": "someone-else"}, updated_at=Now()) == 0
    assert rows.get().status == source


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name", sorted(name for name, t in JOB.transitions.items() if "run_running" in t.guards)
)
def test_a_job_transition_that_needs_a_running_run_moves_nothing_once_it_paused(name, make_project):
    transition = JOB.transitions[name]
    project = make_project(pages=1)
    run = Run.objects.create(project=project, state="paused")
    source = sorted(transition.sources)[0]
    job = job_in(source, run=run, page=project.pages.get(), guards=transition.guards)
    rows = Illustration.objects.filter(pk=job.pk)
    assert JOB.move(rows, name, context={"worker_id": WORKER}, updated_at=Now()) == 0


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(RUN.transitions))
def test_each_run_transition_moves_exactly_its_source_states(name, make_project):
    transition = RUN.transitions[name]
    key = "acct"
    ProviderAccount.objects.create(key=key, provider="openai", state="halted", reason="auth")
    for state in RUN.states:
        project = make_project(pages=0)
        run = Run.objects.create(project=project, state=state, halted_account=key)
        rows = Run.objects.filter(pk=run.pk)
        moved = RUN.move(rows, name, context={"account": key}, updated_at=Now())
        assert moved == (state in transition.sources), (name, state)
        if moved:
            assert rows.get().state == transition.target


@pytest.mark.django_db
def test_a_run_halts_for_its_account_only_while_the_account_is_halted(make_project):
    ProviderAccount.objects.create(key="acct", provider="openai", state="ok")
    run = Run.objects.create(project=make_project(pages=0))
    rows = Run.objects.filter(pk=run.pk)
    assert RUN.move(rows, "halt_for_account", context={"account": "acct"}, updated_at=Now()) == 0
    assert rows.get().state == "running"


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(ACCOUNT.transitions))
def test_each_account_transition_moves_exactly_its_source_states(name):
    transition = ACCOUNT.transitions[name]
    past = db_now() - timedelta(seconds=60)
    for number, state in enumerate(ACCOUNT.states):
        account = ProviderAccount.objects.create(
            key=f"acct-{number}",
            provider="openai",
            state=state,
            reason="outage",
            next_probe_at=past,
            probe_by=WORKER if "probe_mine" in transition.guards else "",
            resumed_at=past - timedelta(seconds=60),
        )
        rows = ProviderAccount.objects.filter(pk=account.pk)
        context = {"worker_id": WORKER, "now": db_now(), "call_started": past}
        moved = ACCOUNT.move(rows, name, context=context, updated_at=Now())
        assert moved == (state in transition.sources), (name, state)
        if moved and transition.target:
            assert rows.get().state == transition.target


@pytest.mark.django_db
def test_an_account_set_going_after_a_call_started_is_not_halted_by_its_failure():
    started = db_now()
    account = ProviderAccount.objects.create(
        key="acct", provider="openai", state="ok", resumed_at=started + timedelta(seconds=1)
    )
    rows = ProviderAccount.objects.filter(pk=account.pk)
    assert ACCOUNT.move(rows, "halt", context={"call_started": started}, updated_at=Now()) == 0
    assert rows.get().state == "ok"
