"""Structured log lines: one per call to a service, one per change of a run's state.

Each line is a sentence for people plus its facts as fields (`extra`), which the JSON
formatter (STUDIO_LOG_FORMAT=json, python-json-logger) writes as keys. Never the API key;
never the prompt unless STUDIO_LOG_PROMPTS=true.
"""

import logging

from django.conf import settings

events = logging.getLogger("generation.events")

# Settings whose values must never reach a log line.
SECRET_SETTINGS = (
    "OPENAI_API_KEY",
    "REPLICATE_API_TOKEN",
    "GEMINI_API_KEY",
    "FAL_KEY",
    "STUDIO_CHAT_IMAGE_API_KEY",
    "STUDIO_METRICS_TOKEN",
    "SECRET_KEY",
)


def attempt(
    *,
    run_id,
    project_id,
    page_id,
    kind: str,
    service: str,
    model: str,
    number: int,
    outcome: str,
    http_status,
    duration_ms,
    cost,
    request_id: str = "",
    prompt: str = "",
) -> None:
    """Log one call to a service with what came of it."""
    fields = {
        "event": "attempt",
        "run": run_id,
        "project": project_id,
        "page": page_id,
        "kind": kind,
        "service": service,
        "model": model,
        "attempt": number,
        "outcome": outcome,
        "http_status": http_status,
        "duration_ms": duration_ms,
        "cost": str(cost or 0),
        "provider_request_id": request_id or None,
    }
    if settings.STUDIO_LOG_PROMPTS and prompt:
        fields["prompt"] = prompt
    status = f", HTTP {http_status}" if http_status else ""
    events.info(
        "Attempt %s at the %s (run %s, project %s): %s%s in %s ms via %s %s, cost %s",
        number,
        f"{kind} of page {page_id}" if page_id else kind,
        run_id,
        project_id,
        outcome,
        status,
        duration_ms,
        service,
        model,
        fields["cost"],
        extra=fields,
    )


def run_state(run, state: str, *, reason: str = "", project_id=None) -> None:
    """Log that a run (a Run or its id) moved to a state (and why, for a halt)."""
    run_id = getattr(run, "pk", run)
    project_id = project_id or getattr(run, "project_id", None)
    if project_id is None:
        from .models import Run

        project_id = Run.objects.filter(pk=run_id).values_list("project_id", flat=True).first()
    because = f" ({reason})" if reason else ""
    events.info(
        "Run %s of project %s is %s%s",
        run_id,
        project_id,
        state,
        because,
        extra={
            "event": "run_state",
            "run": run_id,
            "project": project_id,
            "state": state,
            "reason": reason or None,
        },
    )


class RedactSecrets(logging.Filter):
    """Replace any configured secret found in a record's message or fields by [redacted]:
    a last line of defence, whoever logs what."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = [
            value
            for name in SECRET_SETTINGS
            if len(value := str(getattr(settings, name, "") or "")) >= 8
        ]
        if not secrets:
            return True
        message = record.getMessage()
        if any(secret in message for secret in secrets):
            for secret in secrets:
                message = message.replace(secret, "[redacted]")
            record.msg, record.args = message, None
        for key, value in list(vars(record).items()):
            if isinstance(value, str) and key != "msg" and any(s in value for s in secrets):
                for secret in secrets:
                    value = value.replace(secret, "[redacted]")
                setattr(record, key, value)
        return True
