"""django-q2 entry points: thin wrappers that take ids and call the engine or services."""

from . import engine, notify, services, webhooks
from .models import Heartbeat


def run_next_job(run_id: int, kind: str = "illustration") -> int | None:
    """Work the run's most urgent queued job of a kind; return its id (None if nothing was
    claimed)."""
    return engine.run_next_job(run_id, kind)


def sweep(*, every_run: bool = True) -> dict[str, int]:
    """Reclaim expired leases and re-enqueue lost jobs (every beat from the live clusters,
    generation.liveness; scheduled every minute as a backstop, which also looks at every
    open run); record when it ran, for the operations page and /healthz."""
    counts = services.sweep(every_run=every_run)
    Heartbeat.beat(Heartbeat.SWEEP)
    return counts


def deliver_webhook(report: dict) -> bool:
    """POST a run's end to STUDIO_WEBHOOK_URL, signed, with retries and backoff."""
    return notify.deliver_webhook(report)


def cancel_at_service(canceled: list) -> None:
    """Stop: ask the services to cancel the jobs a stopped run was waiting for."""
    webhooks.cancel_at_service(canceled)
