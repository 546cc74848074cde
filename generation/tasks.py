"""django-q2 entry points: thin wrappers that take ids and call the engine or services."""

from . import engine, services


def run_next_job(run_id: int) -> int | None:
    """Work the run's most urgent queued job; return its id (None if nothing was claimed)."""
    return engine.run_next_job(run_id)


def sweep() -> dict[str, int]:
    """Reclaim expired leases and re-enqueue lost jobs (scheduled every minute)."""
    return services.sweep()
