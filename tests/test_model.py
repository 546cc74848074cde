"""A randomized model test of the engine (issue 29): Hypothesis interleaves workers, the
image service's answers, faults and editors' actions, and checks after every step that no
paid call goes uncounted, no page is paid for twice, and every surface tells the truth.

The engine is the real one (generation.engine, generation.services), in this process,
against the loopback fake image service over HTTP. Faults are injected at named steps:
a worker "killed" there (Killed escapes every `except Exception`, as a kill -9 leaves the
database with what was committed), a database error on a write, a full disk, a heartbeat
that fails. A rule-free teardown sweeps, resumes and drains with the service healthy, then
checks that every page ended somewhere an editor can see.

STUDIO_MODEL_EXAMPLES (default 12) and STUDIO_MODEL_STEPS (default 25) bound a CI run;
STUDIO_MODEL_SOAK_MINUTES repeats it with fresh seeds until the time is up (make soak).
STUDIO_MODEL_WITHOUT (comma-separated: replies such as "hang", faults "kill", "db_error",
"full_disk", "heartbeat", steps "kill:storing", "db:ledger", editors' "delete", "regenerate")
leaves some out, to look past a known failure.
"""

import errno
import inspect
import io
import json
import os
import re
import sys
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.core.files.storage import FileSystemStorage
from django.core.management import call_command
from django.db import OperationalError, connection
from django.test import override_settings
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from generation import engine, kinds, ledger, services
from generation.clock import db_now
from generation.fakes.openai import REPLIES, FakeImageService
from generation.models import (
    ACTIVE_STATUSES,
    WORKING_STATUSES,
    Illustration,
    JobQuerySet,
    ProviderAccount,
    Run,
    SpendEntry,
)
from generation.selectors import review_header
from studio import services as studio_services
from studio.models import Page, Project
from tests.conftest import OPENAI_TEST_MODEL, OPENAI_TEST_SIZE, TEST_API_KEY

Status = Illustration.Status

EXAMPLES = int(os.environ.get("STUDIO_MODEL_EXAMPLES", "12"))
STEPS = int(os.environ.get("STUDIO_MODEL_STEPS", "25"))
SOAK_MINUTES = float(os.environ.get("STUDIO_MODEL_SOAK_MINUTES", "0"))
WITHOUT = {name.strip() for name in os.environ.get("STUDIO_MODEL_WITHOUT", "").split(",")}
LEASE = 1.0  # seconds: short, so a heartbeat that stops lets the lease run out for real
TIMEOUT = 0.3  # seconds per call: a hang or a trickle costs this much

# What the service has charged, or may have, for a call answered with each reply: a whole
# picture is paid; a call whose answer never arrived whole (cut off, trickling past the
# deadline, no answer at all) may have been.
PAID, UNKNOWN = "paid", "unknown"
CHARGES = {"ok": PAID, "cut": UNKNOWN, "trickle": UNKNOWN, "hang": UNKNOWN}
# The service's next answer: a picture, a failure to retry, a rate limit, no credits, a
# refused prompt, an answer cut off, one that trickles past the deadline, none at all.
REPLY_NAMES = [
    name
    for name in ("ok", "500", "429_brief", "402", "400_policy", "cut", "trickle", "hang")
    if name not in WITHOUT
]
# Which replies halt an account for which reason (the evidence a halted account needs).
HALTED_BY = {"out_of_credits": {"402"}, "outage": {"500", "cut", "trickle", "hang"}}
PAGE_IN_PROMPT = re.compile(r"Book (\d+), page (\d+):")
JOB_IN_KEY = re.compile(r"studio-illustration-(\d+)-\d+")


class RecordingService(FakeImageService):
    """The fake image service, noting on each call the name of the reply it was given."""

    def _handler(self):
        base = super()._handler()

        class Handler(base):
            def _call(self, prompt, request, **extra):
                return super()._call(prompt, request, thread=threading.get_ident(), **extra)

        return Handler

    def _reply_for(self, prompt: str):
        with self._lock:
            name = self.script.popleft() if self.script else self.default
            mine = [c for c in self.calls if c.get("thread") == threading.get_ident()]
            mine[-1]["reply"] = name
        return REPLIES[name]()

    def heal(self) -> None:
        """Healthy from now on: no scripted failures left, credits back, nothing held."""
        with self._lock:
            self.script.clear()
            self.default = "ok"
        self.release()

    def reset(self) -> None:
        """As new, for the next example: healthy, with no calls recorded."""
        self.heal()
        with self._lock:
            self.calls.clear()
            self.successes = 0

    def charged_calls(self) -> list[dict]:
        """Return the calls the service charged or may have charged, in order, each with
        its page ("1.2": book 1, page 2), idempotency key, job id and charge."""
        with self._lock:
            calls = [c for c in self.calls if CHARGES.get(c.get("reply"))]
        return [
            {
                "page": "{}.{}".format(*PAGE_IN_PROMPT.search(c["prompt"]).groups()),
                "key": c["idempotency_key"],
                "job": int(JOB_IN_KEY.match(c["idempotency_key"]).group(1)),
                "charge": CHARGES[c["reply"]],
                "reply": c["reply"],
                "at": c["at"],
            }
            for c in calls
        ]


class Killed(BaseException):
    """A worker killed at a chosen step: it escapes every `except Exception`, so what the
    database keeps is what had been committed."""


def database_error() -> OperationalError:
    return OperationalError("database is locked")


# Steps a worker can be killed at, and writes a database error can hit: (owner, name).
KILL_POINTS = {
    "claimed": (engine.JobWorker, "_claimed"),  # the claim committed, nothing else
    "answered": (kinds.IllustrationKind, "call"),  # the service answered; nothing recorded
    "recording": (engine.JobWorker, "_save"),  # the attempt's row
    "ledger": (ledger, "enter"),
    "storing": (kinds.IllustrationKind, "complete"),  # before the picture is stored
    "completing": (engine.JobWorker, "mark_complete"),  # stored, not yet complete
}
# Kills that leave a received picture out of storage.
BEFORE_STORAGE = {"answered", "recording", "ledger", "storing"}
WRITE_POINTS = {
    "start_attempt": (JobQuerySet, "start_attempt"),
    "recording": (engine.JobWorker, "_save"),
    "ledger": (ledger, "enter"),
    "completing": (engine.JobWorker, "mark_complete"),
    "counting": (JobQuerySet, "count_attempt"),
    "failing": (JobQuerySet, "fail"),
    "releasing": (JobQuerySet, "release"),
}


@contextmanager
def patched(owner, name, replacement):
    """Replace owner.name (a function, method or static method) for the block."""
    original = inspect.getattr_static(owner, name)
    if isinstance(original, staticmethod):
        replacement = staticmethod(replacement)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextmanager
def fault_at(point: tuple, error, *, after_call: bool = False):
    """Raise error() the first time the step runs (after it, with after_call); the step
    works normally afterwards. Yield a list that holds True once the fault fired."""
    owner, name = point
    original = getattr(owner, name)
    fired: list[bool] = []

    def step(*args, **kwargs):
        if fired:
            return original(*args, **kwargs)
        fired.append(True)
        if after_call:
            try:
                original(*args, **kwargs)
            except Exception:  # noqa: BLE001 - the answer, whatever it was, is never seen
                pass
        raise error()

    with patched(owner, name, step):
        yield fired


def full_disk(self, name, content):
    raise OSError(errno.ENOSPC, "No space left on device")


class WorkerThread(threading.Thread):
    """A worker in a thread of this process, keeping whatever it raised."""

    def __init__(self, run_id: int):
        super().__init__(daemon=True)
        self.run_id, self.error = run_id, None

    def run(self):
        try:
            engine.run_next_job(self.run_id, sleep=lambda seconds: None)
        except Exception as error:  # reported with the step
            self.error = error
        finally:
            connection.close()


class Broken(AssertionError):
    """An invariant broke (kept apart from a rule that crashed)."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Broken(message)


def page_truth(project: Project) -> dict:
    """Return the project's counts read straight from the rows, as an editor would count
    the cards: pages, illustrated, missing, failed (rejected included), active."""
    counts = {"pages": 0, "illustrated": 0, "missing": 0, "failed": 0, "active": 0}
    for page in project.pages.all():
        jobs = list(page.illustrations.order_by("pk"))
        complete = any(j.status == Status.COMPLETE for j in jobs)
        active = any(j.status in ACTIVE_STATUSES for j in jobs)
        counts["pages"] += 1
        counts["illustrated"] += complete
        counts["missing"] += not complete
        counts["active"] += active
        counts["failed"] += (
            not complete and not active and bool(jobs) and jobs[-1].status == Status.FAILED
        )
    return counts


class EngineModel(RuleBasedStateMachine):
    """Random interleavings of workers, service answers, faults and editors' actions."""

    service: RecordingService  # set by the test
    examples = 0

    def __init__(self):
        super().__init__()
        # Each example starts from an empty database (the test's transaction=True keeps
        # every commit, as the worker threads need).
        call_command("flush", interactive=False, verbosity=0, inhibit_post_migrate=True)
        self.service.reset()
        self.projects: list[int] = []
        self.regenerations: set[int] = set()  # jobs an editor asked to draw a page again
        # Keys of calls whose whole picture never reached storage: its worker was killed
        # first, or the disk was full. One repeat with the same key is what remains possible.
        self.unstored: set[str] = set()
        # Free calls whose answer the studio never learned (its worker killed, or its write
        # failed, first): the ledger may count them as likely paid.
        self.unlearned = 0
        self.events: list[str] = []
        type(self).examples += 1

    # --- helpers ---------------------------------------------------------------------

    def project(self, index: int) -> Project:
        return Project.objects.get(pk=self.projects[index % len(self.projects)])

    def any_run_id(self) -> int | None:
        run = Run.objects.order_by("-pk").first()
        return run.pk if run is not None else None

    def has_runs(self) -> bool:
        return Run.objects.exists()

    def work(self) -> str:
        """One worker takes and works one job; return how it ended."""
        try:
            job = engine.run_next_job(self.any_run_id(), sleep=lambda seconds: None)
        except Killed:
            return "killed"
        except Exception as error:  # a task that raised: django-q2 records it, goes on
            return f"raised {type(error).__name__}"
        return "idle" if job is None else f"worked job {job}"

    # --- setup -----------------------------------------------------------------------

    @initialize(layout=st.sampled_from([(2,), (3,), (4,), (2, 2), (1, 2)]))
    def books(self, layout):
        owner = Project._meta.get_field("owner").related_model.objects.create_user(
            username="alice", password="alice-password"
        )
        for b, pages in enumerate(layout, start=1):
            project = Project.objects.create(owner=owner, title=f"Book {b}")
            Page.objects.bulk_create(
                Page(project=project, number=n, text=f"Book {b}, page {n}: a fox, meadow {n}.")
                for n in range(1, pages + 1)
            )
            self.projects.append(project.pk)

    # --- workers ---------------------------------------------------------------------

    @precondition(lambda self: self.has_runs())
    @rule()
    def a_worker_works_one_job(self):
        self.events.append(self.work())

    def pictures_received_since(self, count: int) -> set[str]:
        with self.service._lock:
            return {c["idempotency_key"] for c in self.service.calls[count:] if c["reply"] == "ok"}

    def free_calls_since(self, count: int) -> int:
        with self.service._lock:
            return sum(1 for c in self.service.calls[count:] if c["reply"] not in CHARGES)

    @precondition(lambda self: self.has_runs() and "kill" not in WITHOUT)
    @rule(point=st.sampled_from([p for p in sorted(KILL_POINTS) if f"kill:{p}" not in WITHOUT]))
    def a_worker_is_killed(self, point):
        before = self.service.call_count
        with fault_at(KILL_POINTS[point], Killed, after_call=point == "answered") as fired:
            self.events.append(self.work())
        if fired and point in BEFORE_STORAGE:
            self.unstored |= self.pictures_received_since(before)
        if fired:
            self.unlearned += self.free_calls_since(before)

    @precondition(lambda self: self.has_runs() and "db_error" not in WITHOUT)
    @rule(point=st.sampled_from([p for p in sorted(WRITE_POINTS) if f"db:{p}" not in WITHOUT]))
    def a_write_fails(self, point):
        before = self.service.call_count
        with fault_at(WRITE_POINTS[point], database_error) as fired:
            self.events.append(self.work())
        if fired:
            self.unlearned += self.free_calls_since(before)

    @precondition(lambda self: self.has_runs() and "full_disk" not in WITHOUT)
    @rule()
    def the_disk_is_full(self):
        before = self.service.call_count
        with patched(FileSystemStorage, "_save", full_disk):
            self.events.append(self.work())
        self.unstored |= self.pictures_received_since(before)

    @precondition(lambda self: self.has_runs() and "heartbeat" not in WITHOUT)
    @rule()
    def a_heartbeat_fails_during_a_slow_call(self):
        """A worker's call is held past its lease while its heartbeat cannot write; the
        sweep runs meanwhile; then the answer arrives."""
        before = self.service.call_count
        broken = threading.Event()
        broken.set()
        renew = engine.JobWorker.renew

        def failing_renew(worker):
            if broken.is_set():
                raise database_error()
            return renew(worker)

        self.service.hold()
        worker = WorkerThread(self.any_run_id())
        # The call outlasts the lease, not its own deadline.
        slow = override_settings(STUDIO_PROVIDER_TIMEOUT=LEASE + 5)
        with slow, patched(engine.JobWorker, "renew", failing_renew):
            worker.start()
            try:
                deadline = time.monotonic() + 5
                while self.service.call_count == before and worker.is_alive():
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
                if worker.is_alive():
                    time.sleep(LEASE + 0.3)
                    services.sweep()
            finally:
                broken.clear()
                self.service.release()
                worker.join(timeout=15)
        check(not worker.is_alive(), "the worker whose heartbeat failed never finished")

    # --- the service -----------------------------------------------------------------

    @rule(reply=st.sampled_from(REPLY_NAMES))
    def the_service_answers_next(self, reply):
        self.service.script.append(reply)

    @precondition(lambda self: self.service.default == "ok" and "402" not in WITHOUT)
    @rule()
    def credits_run_out(self):
        self.service.default = "402"

    @precondition(lambda self: self.service.default != "ok")
    @rule()
    def credits_return(self):
        self.service.default = "ok"

    # --- time and repair -------------------------------------------------------------

    @rule()
    def the_sweep_runs(self):
        services.sweep()

    @rule()
    def leases_run_out_and_the_sweep_runs(self):
        services.sweep(now=db_now() + timedelta(seconds=LEASE + 5))

    @rule()
    def an_outage_probe_is_due(self):
        services.sweep(now=db_now() + timedelta(hours=1))

    # --- editors ---------------------------------------------------------------------

    @rule(book=st.integers(0, 1))
    def generate_missing(self, book):
        services.generate_missing(project=self.project(book))

    @rule(book=st.integers(0, 1))
    def stop(self, book):
        services.stop(project=self.project(book))

    @rule(book=st.integers(0, 1))
    def pause(self, book):
        services.pause(project=self.project(book))

    @rule(book=st.integers(0, 1))
    def resume(self, book):
        services.resume(project=self.project(book))

    @rule(book=st.integers(0, 1))
    def retry_failed(self, book):
        services.retry_failed(project=self.project(book))

    @precondition(lambda self: "delete" not in WITHOUT)
    @rule(book=st.integers(0, 1), number=st.integers(1, 4))
    def delete_a_page(self, book, number):
        page = self.project(book).pages.filter(number=number).first()
        if page is not None:
            studio_services.remove_page(page=page)

    @precondition(lambda self: "regenerate" not in WITHOUT)
    @rule(book=st.integers(0, 1), number=st.integers(1, 4))
    def regenerate_a_page(self, book, number):
        page = self.project(book).pages.filter(number=number).first()
        if page is None or not page.illustrations.filter(status=Status.COMPLETE).exists():
            return
        if services.queue_page(page=page, regenerate=True).count:
            job = page.illustrations.filter(status__in=ACTIVE_STATUSES).get()
            self.regenerations.add(job.pk)

    # --- invariants --------------------------------------------------------------------

    @invariant()
    def every_charged_call_is_in_the_ledger_once(self):
        """(a) Every call the service charged, or may have, is in the ledger once. The ledger
        may hold more only for free calls whose answer the studio never learned (its worker
        was killed, or its write failed, before recording it): those are likely paid."""
        # A job a worker still holds between steps is a dead worker's: its call is entered
        # when the sweep takes the job back.
        if Illustration.objects.filter(status__in=WORKING_STATUSES).exists():
            return
        charged = self.service.charged_calls()
        entries = SpendEntry.objects.count()
        check(
            len(charged) <= entries <= len(charged) + self.unlearned,
            f"(a) the service charged or may have charged {len(charged)} calls "
            f"({[c['reply'] for c in charged]}), the ledger holds {entries} entries "
            f"({self.unlearned} free calls the studio never learned the answer of)",
        )

    @invariant()
    def no_page_is_paid_for_twice(self):
        """(b) After a whole picture, a page is charged again only when the picture never
        reached storage (its worker killed first, a full disk), once, with the same key; after
        a call whose outcome is unknown, the same job repeats it only with the same key. A
        regeneration is a new picture: its job starts afresh."""
        by_page = defaultdict(list)
        for call in self.service.charged_calls():
            by_page[call["page"]].append(call)
        for page, calls in by_page.items():
            for i, call in enumerate(calls):
                fresh = call["job"] in self.regenerations
                earlier = [c for c in calls[:i] if not fresh or c["job"] == call["job"]]
                whole = [n for n, c in enumerate(earlier) if c["charge"] == PAID]
                if whole:
                    last = earlier[whole[-1]]
                    repeated = any(c["key"] == last["key"] for c in earlier[whole[-1] + 1 :])
                    lost = last["key"] in self.unstored
                    check(
                        lost and call["key"] == last["key"] and not repeated,
                        f"(b) page {page}: job {last['job']} received a whole picture (key "
                        f"{last['key']}{', never stored' if lost else ''}), then job "
                        f"{call['job']} was charged again with key {call['key']}",
                    )
                elif call["key"] not in {c["key"] for c in earlier}:
                    unknown = [c for c in earlier if c["job"] == call["job"]]
                    check(
                        not unknown,
                        f"(b) page {page}: job {call['job']} was charged again with a new key "
                        f"{call['key']} after {[c['reply'] for c in unknown]} with key "
                        f"{unknown[-1]['key'] if unknown else ''}",
                    )

    @invariant()
    def no_account_is_halted_without_a_cause(self):
        for account in ProviderAccount.objects.filter(
            state__in=(ProviderAccount.State.HALTED, ProviderAccount.State.PROBING)
        ):
            check(
                bool(account.reason and account.message),
                f"(d) account halted with no reason or message: {account.state}",
            )
            since = account.resumed_at.timestamp() - 0.05 if account.resumed_at else 0
            causes = [
                c
                for c in self.service_calls()
                if c.get("reply") in HALTED_BY.get(account.reason, ()) and c["at"] >= since
            ]
            check(
                bool(causes),
                f"(d) the account is {account.state} ({account.reason}) but no call since it "
                f"was last set going ({account.resumed_at}) answered so",
            )
        # A running or finished run that still names a halt reason tells the JSON, the email
        # and the webhook an untrue story (a stopped run may remember why it had halted).
        named = Run.objects.filter(state__in=(Run.State.RUNNING, Run.State.FINISHED)).exclude(
            halt_reason=""
        )
        check(
            not named.exists(),
            "(d) runs that are running or finished name a halt reason: "
            + ", ".join(f"{r.state} ({r.halt_reason})" for r in named),
        )

    def service_calls(self) -> list[dict]:
        with self.service._lock:
            return list(self.service.calls)

    @invariant()
    def every_surface_reports_the_same_counts(self):
        out = io.StringIO()
        call_command("generation_status", "--json", stdout=out)
        for status in json.loads(out.getvalue())["projects"]:
            project = Project.objects.get(pk=status["id"])
            truth = page_truth(project)
            reported = {name: status[name] for name in truth}
            progress = review_header(project).progress
            header = review_header(project)
            shown = {
                "pages": progress.pages,
                "illustrated": progress.illustrated,
                "missing": progress.missing,
                "failed": progress.failed + progress.rejected,
                "active": header.on_its_way,
            }
            check(
                reported == truth and shown == truth,
                f"(e) {project.title}: the rows say {truth}, generation_status --json says "
                f"{reported}, the review page says {shown}",
            )

    # --- the end -----------------------------------------------------------------------

    def teardown(self):
        if sys.exc_info()[0] is not None:
            return  # a step already failed: report that one
        # The service healthy, credits back, every dead worker's lease run out; an editor
        # presses Resume and the workers drain what is left.
        self.service.heal()
        for _ in range(3):
            services.sweep(now=db_now() + timedelta(hours=1))
            for pk in self.projects:
                services.resume(project=Project.objects.get(pk=pk))
            for _ in range(40):
                if self.work() == "idle":
                    break
        services.sweep()
        self.every_charged_call_is_in_the_ledger_once()
        self.no_page_is_paid_for_twice()
        self.no_account_is_halted_without_a_cause()
        self.every_surface_reports_the_same_counts()
        for pk in self.projects:
            project = Project.objects.get(pk=pk)
            run = Run.objects.filter(project=project).order_by("-pk").first()
            for page in project.pages.all():
                self.page_ends_where_an_editor_sees_it(page, run)

    def page_ends_where_an_editor_sees_it(self, page: Page, run: Run | None) -> None:
        """(c) Complete, failed with a reason, rejected, canceled by Stop, never asked for,
        or waiting with a reason an editor can see."""
        jobs = list(page.illustrations.order_by("pk"))
        if any(j.status == Status.COMPLETE for j in jobs) or not jobs:
            return
        last = jobs[-1]
        where = f"(c) {page.text[:16]!r} ends {last.status}"
        if last.status == Status.FAILED:
            check(bool(last.failure_reason and last.error_message), f"{where} with no reason")
        elif last.status == Status.CANCELED:
            check(
                last.run is not None and last.run.state in (Run.State.STOPPED, "stopping"),
                f"{where} in a run that is {last.run.state if last.run else None}",
            )
        elif last.status in ACTIVE_STATUSES:
            state = last.run.state if last.run else None
            check(
                state in (Run.State.HALTED, Run.State.PAUSED) and bool(last.run.message),
                f"{where} after the drain, in a run that is {state} "
                f"({last.run.halt_reason if last.run else ''}: "
                f"{last.run.message[:80] if last.run else ''!r}), attempts "
                f"{last.attempts_made}",
            )
        else:
            check(False, where)


@pytest.fixture
def recording_service():
    service = RecordingService().start()
    yield service
    service.stop()


@pytest.mark.django_db(transaction=True)
def test_the_engine_keeps_its_promises_whatever_happens(
    settings, recording_service, broker, monkeypatch
):
    settings.STUDIO_IMAGE_PROVIDER = "openai"
    settings.OPENAI_BASE_URL = recording_service.url
    settings.OPENAI_API_KEY = TEST_API_KEY
    settings.STUDIO_IMAGE_MODEL = OPENAI_TEST_MODEL
    settings.STUDIO_IMAGE_SIZE = OPENAI_TEST_SIZE
    settings.STUDIO_PROVIDER_TIMEOUT = TIMEOUT
    settings.STUDIO_LEASE_SECONDS = LEASE
    settings.STUDIO_PRICES = {"openai:gpt-image-1": "0.04"}
    settings.STUDIO_OUTAGE_THRESHOLD = 4
    settings.STUDIO_BACKOFF_BASE = 0
    # A claim that keeps losing races gives up at once instead of after a minute.
    monkeypatch.setattr(engine, "CLAIM_PATIENCE", 1.0)
    EngineModel.service = recording_service
    EngineModel.examples = 0
    chosen = hypothesis_settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        report_multiple_bugs=True,
        # The suite's run is a fixed search (the same examples every time, no example
        # database), so a red build is a regression, not a lucky draw; `make soak`
        # searches with fresh seeds.
        **({} if SOAK_MINUTES else {"derandomize": True, "database": None}),
    )
    deadline = time.monotonic() + SOAK_MINUTES * 60
    rounds = 0
    while True:
        rounds += 1
        try:
            run_state_machine_as_test(EngineModel, settings=chosen)
        finally:
            if SOAK_MINUTES:
                print(f"soak: {EngineModel.examples} examples in {rounds} rounds")
        if time.monotonic() >= deadline:
            break
