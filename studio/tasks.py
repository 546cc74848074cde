"""django-q2 entry points for the studio's own background work."""

import logging

from django.utils import timezone

from .export import run_export as build
from .models import Export

logger = logging.getLogger(__name__)


def run_export(export_id: int) -> None:
    """Build an export; a failure is recorded on it for the editor to see."""
    export = Export.objects.select_related("project__owner").filter(pk=export_id).first()
    if export is None or export.status != Export.Status.QUEUED:
        return  # deleted, or a second delivery of the same task
    try:
        build(export)
    except Exception as error:
        logger.exception("Export %s failed", export_id)
        Export.objects.filter(pk=export_id).update(
            status=Export.Status.FAILED,
            error=f"The export failed: {error}",
            finished_at=timezone.now(),
        )
