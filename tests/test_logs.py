"""Structured logs: one line per call and per run state change, JSON when asked for."""

import json
import logging

import pytest

from generation import services
from generation.models import GenerationAttempt, Illustration
from generation.selectors import project_progress
from tests.conftest import ARTIFACTS, TEST_API_KEY, openai_env, wait_until


def json_lines(path) -> list[dict]:
    """Return the log's JSON lines from the studio's loggers (django-q2 writes its own)."""
    found = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record["logger"].startswith("generation"):
                found.append(record)
    return found


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_logs_each_call_and_run_change_as_json_lines(
    request, make_project, qcluster, fake_openai
):
    project = make_project(pages=2)
    fake_openai.script.extend(["503"])  # the first call fails once, then all succeed
    qcluster(**openai_env(fake_openai, STUDIO_WORKERS=1, STUDIO_LOG_FORMAT="json"))
    run = services.generate_missing(project=project).run
    wait_until(lambda: project_progress(project).complete, timeout=60)
    log = ARTIFACTS / f"qcluster-{request.node.name}-0.log"
    pages = dict(Illustration.objects.filter(run=run).values_list("page__number", "page_id"))

    records = wait_until(
        lambda: [r for r in json_lines(log) if r.get("event") == "run_state"] and json_lines(log),
        timeout=10,
    )

    attempts = [r for r in records if r["event"] == "attempt"]
    assert [(r["page"], r["attempt"], r["outcome"], r["http_status"]) for r in attempts] == [
        (pages[1], 1, "transient", 503),
        (pages[1], 2, "success", 200),
        (pages[2], 1, "success", 200),
    ]
    first = attempts[0]
    assert {k: first[k] for k in ("run", "project", "kind", "service", "model", "level")} == {
        "run": run.pk,
        "project": project.pk,
        "kind": "illustration",
        "service": "openai",
        "model": "gpt-image-1",
        "level": "INFO",
    }
    assert isinstance(first["duration_ms"], int) and first["cost"] == "0"
    paid = GenerationAttempt.objects.get(illustration__page_id=pages[1], number=2)
    assert attempts[1]["cost"] == str(paid.cost) and paid.cost > 0
    assert all("provider_request_id" in r and "time" in r for r in attempts)
    changes = [(r["run"], r["state"]) for r in records if r["event"] == "run_state"]
    assert changes == [(run.pk, "finished")]
    text = log.read_text()
    assert TEST_API_KEY not in text
    assert "meadow number 1." not in text  # no prompt without STUDIO_LOG_PROMPTS


@pytest.mark.django_db
def test_prompts_are_logged_only_when_asked_for(settings, make_project, drain, caplog):
    project = make_project(pages=1)
    run = services.generate_missing(project=project).run
    with caplog.at_level(logging.INFO, logger="generation.events"):
        drain(run.pk)
    attempts = [r for r in caplog.records if getattr(r, "event", "") == "attempt"]
    assert [getattr(r, "prompt", None) for r in attempts] == [None]

    settings.STUDIO_LOG_PROMPTS = True
    caplog.clear()
    run = services.queue_page(page=project.pages.get(), regenerate=True).run
    with caplog.at_level(logging.INFO, logger="generation.events"):
        drain(run.pk)
    attempts = [r for r in caplog.records if getattr(r, "event", "") == "attempt"]
    assert len(attempts) == 1 and "meadow number 1." in attempts[0].prompt


@pytest.mark.django_db
def test_run_state_changes_are_logged_once_each(make_project, caplog):
    project = make_project(pages=2)
    with caplog.at_level(logging.INFO, logger="generation.events"):
        run = services.generate_missing(project=project).run
        services.pause(project=project)
        services.resume(project=project)
        services.stop(project=project)
    changes = [
        (r.run, r.project, r.state)
        for r in caplog.records
        if getattr(r, "event", "") == "run_state"
    ]
    assert changes == [
        (run.pk, project.pk, "running"),
        (run.pk, project.pk, "paused"),
        (run.pk, project.pk, "running"),
        (run.pk, project.pk, "stopped"),
    ]


def test_a_secret_never_reaches_a_log_line(settings, caplog):
    settings.OPENAI_API_KEY = TEST_API_KEY
    logger = logging.getLogger("generation.test")
    from generation.logs import RedactSecrets

    redact = RedactSecrets()
    logger.addFilter(redact)
    try:
        with caplog.at_level(logging.INFO, logger="generation.test"):
            logger.info("sent %s", f"Bearer {TEST_API_KEY}", extra={"header": TEST_API_KEY})
    finally:
        logger.removeFilter(redact)
    assert caplog.records[0].getMessage() == "sent Bearer [redacted]"
    assert caplog.records[0].header == "[redacted]"
