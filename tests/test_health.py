"""/healthz and /metrics: what load balancers and monitoring read."""

from datetime import timedelta
from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from generation import services, tasks, workers
from generation.clock import db_now
from generation.models import (
    GenerationAttempt,
    Illustration,
    ProviderAccount,
    Run,
    SpendEntry,
)
from tests.conftest import stop_process_group, wait_until


def health(client):
    response = client.get("/healthz")
    return response.status_code, response.json()


@pytest.mark.django_db(transaction=True)
def test_healthz_is_503_without_a_cluster_and_200_while_a_real_one_runs(client, qcluster):
    assert health(client) == (
        503,
        {
            "database": "ok",
            "broker": "ok",
            "workers": {"alive": 0, "last_heartbeat_s": None},
            "sweep": {"last_run_s": None},
            "failing": ["workers"],
        },
    )

    process = qcluster(STUDIO_WORKERS=2)
    status, report = wait_until(lambda: (answer := health(client))[0] == 200 and answer, timeout=30)
    assert report["workers"]["alive"] == 1
    assert 0 <= report["workers"]["last_heartbeat_s"] <= 6  # written at least every 5 s
    tasks.sweep()
    assert health(client)[1]["sweep"] == {"last_run_s": 0}
    assert set(report) == {"database", "broker", "workers", "sweep"}  # nothing of projects

    stop_process_group(process)
    status, report = wait_until(lambda: (answer := health(client))[0] == 503 and answer, timeout=30)
    assert report["failing"] == ["workers"]
    assert report["workers"]["alive"] == 0


@pytest.mark.django_db(transaction=True)
def test_a_cluster_is_seen_with_its_workers_and_a_stopped_one_is_not_alive(qcluster):
    process = qcluster(STUDIO_WORKERS=3)
    found = wait_until(
        lambda: [c for c in workers.alive() if c.status in ("Idle", "Working")], timeout=30
    )
    assert [(c.workers, c.pid == process.pid) for c in found] == [(3, True)]
    stop_process_group(process)
    wait_until(lambda: workers.alive() == [], timeout=30)


@pytest.mark.django_db
def test_metrics_are_off_without_a_token_and_refuse_a_wrong_one(client, settings):
    settings.STUDIO_METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    settings.STUDIO_METRICS_TOKEN = "s3cret-metrics-token"
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert (wrong.status_code, wrong["WWW-Authenticate"]) == (401, 'Bearer realm="metrics"')
    assert (
        client.get("/metrics", headers={"Authorization": "s3cret-metrics-token"}).status_code == 401
    )
    right = client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics-token"})
    assert right.status_code == 200
    assert right["Content-Type"].startswith("text/plain; version=0.0.4")


def samples(text: str) -> dict:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.django_db
def test_metrics_parse_back_with_the_numbers_of_known_rows(client, settings, make_project):
    settings.STUDIO_METRICS_TOKEN = "s3cret-metrics-token"
    project = make_project(pages=5)
    run = services.generate_missing(project=project).run  # five queued illustrations
    job = Illustration.objects.filter(run=run).order_by("pk").first()
    Illustration.objects.filter(pk=job.pk).update(
        provider="openai", model="gpt-image-1", status="complete"
    )
    now = db_now()
    GenerationAttempt.objects.bulk_create(
        GenerationAttempt(
            illustration=job, number=n, started_at=now, outcome=outcome, duration_ms=ms
        )
        for n, outcome, ms in [
            (1, "transient", 400),
            (2, "success", 1500),
            (3, "success", 7000),
            (4, "in_flight", None),
        ]
    )
    SpendEntry.objects.bulk_create(
        SpendEntry(
            attempt_id=n,
            account="openai|u|k",
            provider="openai",
            model="gpt-image-1",
            kind="illustration",
            day=now.date(),
            amount=Decimal("0.042"),
            basis="price",
        )
        for n in (2, 3)
    )
    ProviderAccount.objects.create(
        key="openai|u|k", provider="openai", state="halted", reason="out_of_credits"
    )
    Illustration.objects.filter(run=run, status="queued").update(
        created_at=now - timedelta(seconds=90)
    )

    response = client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics-token"})
    found = samples(response.content.decode())

    model = (("model", "gpt-image-1"), ("service", "openai"))
    assert found[("studio_calls_total", (*model[:1], ("outcome", "success"), model[1]))] == 2
    assert found[("studio_calls_total", (*model[:1], ("outcome", "transient"), model[1]))] == 1
    assert [k for k in found if k[0] == "studio_calls_total"] == [
        ("studio_calls_total", (("model", "gpt-image-1"), ("outcome", o), ("service", "openai")))
        for o in ("success", "transient")
    ]
    bucket = "studio_call_duration_seconds_bucket"
    assert [
        found[(bucket, (("le", le), *model))] for le in ("0.5", "1.0", "2.5", "5.0", "10.0", "+Inf")
    ] == [1, 1, 2, 2, 3, 3]
    assert found[("studio_call_duration_seconds_count", model)] == 3
    assert found[("studio_call_duration_seconds_sum", model)] == pytest.approx(8.9)
    assert found[("studio_jobs", (("kind", "illustration"), ("status", "queued")))] == 4
    assert found[("studio_jobs", (("kind", "illustration"), ("status", "complete")))] == 1
    spend = (
        ("account", "openai|u|k"),
        ("confirmed", "true"),
        ("model", "gpt-image-1"),
        ("provider", "openai"),
    )
    assert found[("studio_spend_dollars_total", spend)] == pytest.approx(0.084)
    assert found[("studio_runs", (("state", "running"),))] == 1
    assert found[("studio_runs", (("state", "halted"),))] == 0
    halted = (("account", "openai|u|k"), ("reason", "out_of_credits"), ("state", "halted"))
    assert found[("studio_account_state", halted)] == 1
    ok = (("account", "openai|u|k"), ("reason", ""), ("state", "ok"))
    assert found[("studio_account_state", ok)] == 0
    assert 90 <= found[("studio_oldest_waiting_job_age_seconds", ())] < 150
    assert found[("studio_worker_clusters_alive", ())] == 0
    assert Run.objects.count() == 1


@pytest.mark.django_db
def test_every_call_in_the_metrics_names_its_service_and_model(
    client, settings, make_project, drain
):
    from studio import characters

    settings.STUDIO_METRICS_TOKEN = "s3cret-metrics-token"
    project = make_project(pages=1)
    peter = characters.create_character(project=project, name="Peter", description="A rabbit.")
    drain(services.draw_sheet(character=peter).run.pk, kind="sheet")  # a character sheet
    drain(services.generate_missing(project=project).run.pk)  # and a page

    response = client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics-token"})
    found = samples(response.content.decode())

    labels = (("model", "embedded-draft-1"), ("outcome", "success"), ("service", "embedded"))
    assert [(k, v) for k, v in found.items() if k[0] == "studio_calls_total"] == [
        (("studio_calls_total", labels), 2)
    ]
    count = ("studio_call_duration_seconds_count", (labels[0], labels[2]))
    assert [k for k in found if k[0] == count[0]] == [count]
