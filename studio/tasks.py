"""django-q2 entry points for the studio's own background work."""

import logging

from django.conf import settings
from django.db.models import Count, Subquery
from django.db.models.functions import Coalesce, Now
from django.utils import timezone
from django_q.tasks import async_task

from .export import run_export as build
from .export import write_when_free
from .models import Export

logger = logging.getLogger(__name__)


def run_export(export_id: int) -> None:
    """Build an export when it is its editor's turn; a failure is recorded on it for the
    editor to see (through a busy database too; if even that cannot be written, the
    export's silence shows it failed). Then start the editor's next waiting export."""
    export = Export.objects.select_related("project__owner").filter(pk=export_id).first()
    if export is None or export.status != Export.Status.QUEUED:
        return  # deleted, or a second delivery of the same task
    owner_id = export.project.owner_id
    if not claim_export(export_id, owner_id=owner_id):
        return  # started elsewhere, or waiting its turn: the editor's next finish starts it
    try:
        build(export)
    except Exception as error:
        logger.exception("Export %s failed", export_id)
        write_when_free(
            Export.objects.filter(pk=export_id),
            status=Export.Status.FAILED,
            error=f"The export failed: {error}",
            finished_at=timezone.now(),
        )
    finally:
        start_waiting_exports(owner_id=owner_id)


def claim_export(export_id: int, *, owner_id: int) -> bool:
    """Start a queued export if its editor has fewer than STUDIO_EXPORTS_PER_EDITOR running
    (alive ones), in one conditional UPDATE; return whether it started."""
    running = (
        Export.objects.running_for(owner_id)
        .order_by()
        .values("project__owner_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return bool(
        Export.objects.filter(pk=export_id, status=Export.Status.QUEUED)
        .annotate(running=Coalesce(Subquery(running), 0))
        .filter(running__lt=settings.STUDIO_EXPORTS_PER_EDITOR)
        .update(status=Export.Status.RUNNING, beat_at=Now())
    )


def start_waiting_exports(*, owner_id: int) -> int:
    """Hand the editor's oldest waiting exports to the workers, as many as the cap has room
    for; return how many. A task finding the turn taken returns at once."""
    room = settings.STUDIO_EXPORTS_PER_EDITOR - Export.objects.running_for(owner_id).count()
    waiting = list(
        Export.objects.filter(project__owner_id=owner_id, status=Export.Status.QUEUED)
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)[: max(0, room)]
    )
    for export_id in waiting:
        async_task("studio.tasks.run_export", export_id, task_name=f"export-{export_id}")
    return len(waiting)
