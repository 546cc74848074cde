"""Word when a run ends: one email to its owner, and an optional signed webhook for teams.

run_ended() is called wherever a run ends (the engine settling it, a halt). Several
workers may end the same run at once; one conditional UPDATE picks the one that tells.
"""

import hashlib
import hmac
import json
import logging

import requests
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django_q.tasks import async_task
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from studio.models import EditorSettings

from .models import Run
from .plain import plain_message
from .selectors import book_runs, project_progress, spend

logger = logging.getLogger(__name__)

# The ends worth a word: a finished run (every page drawn, or some failed) and a halt. A
# stopped run was stopped by the editor, who knows.
TOLD_ENDS = (Run.State.FINISHED, Run.State.HALTED)
SIGNATURE_HEADER = "X-Studio-Signature"


class WebhookRefused(Exception):
    """The receiver answered with an error worth retrying (5xx, 429)."""


def run_ended(run_id: int) -> bool:
    """Tell the run's owner (and the webhook) that the run ended, once per end: return
    whether this call told them. Call it after the run's end is committed."""
    run = Run.objects.filter(pk=run_id, state__in=TOLD_ENDS).values("state").first()
    if run is None:
        return False
    if run["state"] == Run.State.FINISHED and not book_runs().filter(pk=run_id).exists():
        return False  # character sheets drawn: no word of the book (a halt is still told)
    won = (
        Run.objects.filter(pk=run_id, state=run["state"])
        .exclude(end_notice=run["state"])
        .update(end_notice=run["state"])
    )
    if not won:
        return False  # another worker told them, or the run moved on meanwhile
    report = run_report(run_id)
    _email(report)
    if settings.STUDIO_WEBHOOK_URL:
        transaction.on_commit(
            lambda: async_task(
                "generation.tasks.deliver_webhook", report, task_name=f"webhook-run-{run_id}"
            )
        )
    return True


def run_report(run_id: int) -> dict:
    """Return what the run's end says, as the webhook's JSON body (the email reads it too)."""
    run = Run.objects.select_related("project__owner").get(pk=run_id)
    project = run.project
    progress = project_progress(project)
    return {
        "event": "run.ended",
        "run": run.pk,
        "state": run.state,
        "halt_reason": run.halt_reason or None,
        "message": plain_message(run.message) or None,
        "project": {"id": project.pk, "title": project.title},
        "owner": project.owner.get_username(),
        "counts": {
            "pages": progress.pages,
            "illustrated": progress.illustrated,
            "missing": progress.missing,
            "failed": progress.failed,
            "rejected": progress.rejected,
        },
        "spent": str(spend(project, run).run),
        "url": settings.STUDIO_BASE_URL + reverse("project-detail", args=[project.pk]),
    }


def summary(report: dict) -> str:
    """Return the one line an email's subject (and a tab's title) gives: "✓ 24/24 · Title"."""
    counts = report["counts"]
    counted = f"{counts['illustrated']}/{counts['pages']}"
    title = report["project"]["title"]
    if report["state"] == Run.State.HALTED:
        reason = dict(Run.HaltReason.choices).get(report["halt_reason"], "halted")
        return f"Halted ({str(reason).lower()}): {counted} · {title}"
    if counts["illustrated"] == counts["pages"]:
        return f"✓ {counted} · {title}"
    return f"✗ {counted}, {counts['missing']} missing · {title}"


def _email(report: dict) -> None:
    run = Run.objects.select_related("project__owner").get(pk=report["run"])
    owner = run.project.owner
    if not owner.email or not EditorSettings.of(owner).email_on_run_end:
        return
    counts = report["counts"]
    lines = [
        f"The run of {report['project']['title']} has "
        + ("halted." if report["state"] == Run.State.HALTED else "finished."),
        "",
        f"Illustrated: {counts['illustrated']} of {counts['pages']} pages",
        f"Missing: {counts['missing']}",
        f"Failed: {counts['failed']}",
        f"Rejected prompts: {counts['rejected']}",
        f"Spent in this run: ${report['spent']}",
    ]
    if report["state"] == Run.State.HALTED and report["message"]:
        lines += ["", f"Why it halted: {report['message']}"]
    lines += ["", f"Open the project: {report['url']}", "", _settings_line()]
    try:
        send_mail(
            f"Illustration Studio: {summary(report)}",
            "\n".join(lines),
            settings.DEFAULT_FROM_EMAIL,
            [owner.email],
        )
    except Exception:  # a mail server down must not break the worker that ended the run
        logger.exception("Could not email %s that run %s ended", owner.email, report["run"])


def _settings_line() -> str:
    return (
        "You get this email because a run of yours ended; switch it off in your settings: "
        + settings.STUDIO_BASE_URL
        + reverse("editor-settings")
    )


def sign(body: bytes, secret: str) -> str:
    """Return the X-Studio-Signature value of a webhook body: "sha256=<hex HMAC>"."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver_webhook(report: dict, *, sleep=None) -> bool:
    """POST the report to STUDIO_WEBHOOK_URL, signed; retry connection errors, 5xx and 429
    with exponential backoff. Return whether the receiver accepted it."""
    url, secret = settings.STUDIO_WEBHOOK_URL, settings.STUDIO_WEBHOOK_SECRET
    if not url:
        return False
    body = json.dumps(report, sort_keys=True).encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, secret)}

    def post() -> requests.Response:
        response = requests.post(url, data=body, headers=headers, timeout=10)
        if response.status_code >= 500 or response.status_code == 429:
            raise WebhookRefused(f"HTTP {response.status_code}")
        return response

    retrying = Retrying(
        stop=stop_after_attempt(max(1, settings.STUDIO_WEBHOOK_ATTEMPTS)),
        wait=wait_exponential(multiplier=settings.STUDIO_WEBHOOK_BACKOFF, max=300),
        retry=retry_if_exception_type((requests.RequestException, WebhookRefused)),
        reraise=True,
        **({"sleep": sleep} if sleep is not None else {}),
    )
    try:
        response = retrying(post)
    except (requests.RequestException, WebhookRefused) as error:
        logger.warning("Webhook for run %s not delivered: %s", report.get("run"), error)
        return False
    if response.status_code >= 400:
        logger.warning(
            "Webhook for run %s refused: HTTP %s", report.get("run"), response.status_code
        )
        return False
    return True
