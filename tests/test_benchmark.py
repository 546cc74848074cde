"""The benchmark command runs every scenario and reports them; timings are its business,
not the tests' (they are checked in docs/benchmark.md's tables, on this machine)."""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import connection, connections

from generation import services
from generation.models import Illustration
from studio.models import Project
from tests.conftest import ROOT, stop_process_group, wait_until, worker_env
from tests.test_runstudio import descendants, is_alive


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


@pytest.mark.long
@pytest.mark.django_db(transaction=True)
def test_the_benchmark_runs_every_scenario_and_cleans_up(broker):
    result = subprocess.run(
        [sys.executable, "manage.py", "benchmark", "--quick", "--json"],
        cwd=ROOT,
        env=worker_env(STUDIO_BACKOFF_BASE="0.5"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode in (0, 1), result.stderr  # 1: a goal missed at quick sizes
    assert result.stdout.lstrip().startswith("{"), result.stderr[-4000:]  # a report, not none
    report = json.loads(result.stdout)
    assert {row["scenario"] for row in report["rows"]} == {
        "makespan",
        "overhead",
        "halt",
        "pages",
        "bulk",
        "export",
        "slow-calls",
        "skew",
        "fairness",
        "watchers",
        "bigbook",
        "chaos",
        "webhooks",
        "economy",
    }
    rows = {row["measure"]: row for row in report["rows"]}
    assert rows["queries constant in pages"]["value"] is True
    assert rows["calls after the halting 402"]["ok"] is True
    assert rows["paid calls per kept image (2.5 s calls, 1 s lease)"]["value"] == 1.0
    assert rows["calls in the busiest minute"]["ok"] is True
    assert rows["queue 20 × 6 pages (120 jobs)"]["value"] > 0
    assert rows["4-page book queued after a 24-page one: done after"]["value"] > 0
    assert rows["its wait against its ideal"]["value"] > 0
    assert rows["big book done by then"]["unit"] == "pages"
    assert rows["claim conflicts per 1,000 claims"]["value"] >= 0
    # Faults and killed clusters: every call the service charged is in the ledger, once.
    assert rows["charged calls missing from the ledger"]["ok"] is True
    assert rows["calls the service charged"]["value"] > 0
    # More only by calls whose worker was killed before the request left (entered as
    # likely: their outcome is unknown), never more than the calls lost.
    assert rows["ledger entries the service never charged"]["ok"] is True
    # Simulated tabs polled a gunicorn server while a run drew: every poll answered.
    for tabs in (10, 20):
        assert rows[f"{tabs} tabs: failed requests"]["value"] == 0
        assert rows[f"{tabs} tabs: requests/s"]["value"] > 0
    # Tabs left open on an idle book poll too, and mostly hear "nothing changed".
    assert rows["20 idle tabs: failed requests"]["value"] == 0
    assert rows["20 idle tabs: quiet polls (204)"]["value"] > 50
    assert rows["20 idle tabs: server CPU (of one core)"]["unit"] == "%"
    assert rows["the run was in progress throughout"]["value"] is True
    if connection.vendor == "postgresql":  # its server here: its processes' CPU is read
        assert rows["PostgreSQL CPU per picture (its processes here)"]["value"] > 0
        assert rows["pictures/s one PostgreSQL core carries"]["value"] > 0
    assert rows["review page queries, 300 pages"]["value"] > 0
    # Economy mode: the book as one batch, every picture kept, at half the live cost.
    assert rows["batches created"]["ok"] is True
    assert rows["pictures kept"]["ok"] is True
    assert rows["ledger entries for the batch"]["ok"] is True
    assert rows["batch cost against now"]["ok"] is True
    # The studio against the bare queue on the same cluster, and what a picture costs the
    # database, every statement accounted for by its purpose.
    assert rows["bare django-q2, 200 empty tasks"]["value"] > 0
    assert rows["ratio to bare django-q2"]["value"] > 0
    parts = [row["value"] for row in report["rows"] if row["measure"].startswith("statements: ")]
    assert sum(parts) == rows["statements per picture"]["value"] > 0
    assert rows["write transactions per picture"]["value"] > 0
    assert rows["Generate missing, 300 pages (300 jobs)"]["value"] > 0
    # Pictures made at the service for a webhook hold no worker: every prediction started
    # before the first ended.
    assert rows["pages/min with webhooks (2 s pictures, 2 workers)"]["ok"] is True
    assert Project.objects.filter(owner__username="benchmark").count() == 0


@pytest.mark.django_db(transaction=True)
def test_ctrl_c_stops_the_benchmarks_clusters_and_deletes_its_projects(broker):
    benchmark = subprocess.Popen(
        [sys.executable, "manage.py", "benchmark", "--scenario", "makespan"],
        cwd=ROOT,
        env=worker_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        # The makespan project comes once its cluster has warmed up: 48 pages take 24 s.
        wait_until(
            lambda: Project.objects.filter(owner__username="benchmark", title="makespan").exists(),
            timeout=60,
            message="the benchmark's cluster did not warm up",
        )
        below = {pid: cmdline(pid) for pid in descendants(benchmark.pid)}
        os.killpg(benchmark.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        _, stderr = benchmark.communicate(timeout=30)
    finally:
        stop_process_group(benchmark)

    assert any(command.endswith("manage.py qcluster") for command in below.values())
    assert [pid for pid in below if is_alive(pid)] == []
    left = Project.objects.filter(owner__username="benchmark").count()
    assert left == 0, stderr[-4000:]


def seen_from_another_connection(count) -> int:
    """Return count() as a connection of another thread sees it: what is committed."""
    seen = []

    def look() -> None:
        try:
            seen.append(count())
        finally:
            connections.close_all()

    looker = threading.Thread(target=look)
    looker.start()
    looker.join()
    return seen[0]


@pytest.mark.django_db(transaction=True)
def test_the_cleanup_after_a_ctrl_c_commits_its_deletes_whatever_the_connection_was_left_in(
    broker,
):
    from generation.management.commands.benchmark import Bench, Command

    bench = Bench(Command(), 4)
    Project.objects.create(owner=bench.user, title="left by a scenario")
    # What a Ctrl-C landing inside the ORM's own bookkeeping (Atomic's exit restoring
    # autocommit) can leave behind: this thread's connection in a transaction of its own.
    connection.set_autocommit(False)
    Project.objects.filter(owner=bench.user).update(title="half written")
    benchmark_projects = Project.objects.filter(owner__username="benchmark").count
    bench.cleanup_on_a_fresh_connection()
    assert seen_from_another_connection(benchmark_projects) == 0


def refused_benchmark(*args: str) -> subprocess.CompletedProcess:
    """Run `manage.py benchmark` with arguments it refuses before starting any scenario."""
    return subprocess.run(
        [sys.executable, "manage.py", "benchmark", *args],
        cwd=ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.django_db(transaction=True)
def test_clusters_must_split_the_workers_evenly(broker):
    result = refused_benchmark("--scenario", "makespan", "--clusters", "3")
    assert result.returncode == 1
    assert "--clusters must divide C = " in result.stderr
    assert "workers evenly (got 3)" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_the_benchmark_refuses_to_run_beside_a_studio_run_in_progress(broker, make_project):
    """Any worker takes any project's next job: the benchmark's workers, with its fake
    service, would draw an editor's queued pages."""
    project = make_project(pages=2, title="Someone's book")
    services.generate_missing(project=project)
    result = refused_benchmark("--scenario", "pages")
    assert result.returncode == 2
    assert "1 project(s) of this studio have a run in progress (Someone's book)" in result.stderr
    assert Illustration.objects.filter(page__project=project, status="queued").count() == 2
    assert not Project.objects.filter(owner__username="benchmark").exists()
