"""The projects' change counters: Project.version moves with every change a review page
shows, so a poll whose tab already shows the current version can answer "nothing changed"
after one indexed query (see studio.views.review.project_poll).

Writers do not have to remember it: the querysets of the rows a review page shows (pages,
jobs, runs, characters, reference pictures) move their projects' counters in the same
transaction as their own UPDATE, bulk_create and DELETE, and post_save / post_delete /
m2m_changed signals do it for instance saves (forms, run.save()). The few writers outside
those paths call `Project.objects.mark_changed(*ids)` (studio.models) themselves.

This module names no model: it finds the project model from the rows' own relations (their
`project_path`), and moves counters through its queryset's `mark_changed(*ids)` and
`move_counters()`, so that studio.models can import it and nothing here reaches back.
"""

from functools import cache

from django.db import connections, models, transaction

# Fields whose change no card and no header shows: writing only these moves no counter (a
# worker renews its lease every few seconds; a run's fair-turn bookkeeping moves with every
# claim, and the claim itself already moves it).
INVISIBLE_FIELDS = frozenset(
    {
        "lease_expires_at",
        "rate_limited_since",
        "provider_job_id",
        "failures_in_row",
        "turn",
        "claims",
        "claim_conflicts",
    }
)


@cache
def _project_model(model) -> type[models.Model]:
    """Return the project model a row model's `project_path` leads to ("project_id": its
    `project` field's model; "page__project_id": that of its `page` field's model)."""
    *hops, last = model.project_path.split("__")
    for name in hops:
        model = model._meta.get_field(name).related_model
    return model._meta.get_field(last).related_model


def _projects(model) -> models.QuerySet:
    """Return all projects, as the queryset that moves their counters."""
    return _project_model(model)._default_manager.all()


def _visible(fields) -> bool:
    return not set(fields) <= INVISIBLE_FIELDS


class ProjectRowsQuerySet(models.QuerySet):
    """The queryset of rows that belong to a project and show on its review page: its
    writes move the project's change counter. The model's `project_path` leads from a row
    to its project's id ("project_id", "page__project_id")."""

    _project_id = None  # of_project()

    def of_project(self, project_id: int):
        """Return these rows, named as all the given project's by a caller that knows it
        (a worker, of its job). Where writes are serialized (SQLite), a visible write then
        moves the counter by the project's id after the write, only if it changed a row,
        instead of through a subquery repeating the write's conditions: a claim's worker
        holds the write lock while both are built. Elsewhere nothing changes: the
        project's row is still locked first, the lock order of every writer."""
        rows = self._chain()
        rows._project_id = project_id
        return rows

    def _clone(self):
        clone = super()._clone()
        clone._project_id = self._project_id
        return clone

    def _changed_first(self) -> None:
        """Move the counters of the projects of this queryset's rows, before the write, in
        one statement: its subquery carries the write's own conditions (a compare-and-set
        that has already lost matches no row, so moves nothing), and taking the project's
        row first keeps the lock order of the services, which lock the project first."""
        rows = self.order_by().values(self.model.project_path)
        _projects(self.model).filter(pk__in=rows).move_counters()

    def locked(self) -> list:
        """Lock and return these rows, their projects' rows first (by id): the lock order
        of every write that moves a change counter. A transaction that locked a run, then
        moved its project's counter (run.save()), would deadlock against one queuing work
        on that project, which locks the project, then the run. Call inside a transaction."""
        projects = self.order_by().values(self.model.project_path)
        mine = _projects(self.model).select_for_update().filter(pk__in=projects).order_by("pk")
        list(mine.values_list("pk", flat=True))
        return list(self.select_for_update())

    def update(self, **kwargs) -> int:
        if not _visible(kwargs):
            return super().update(**kwargs)
        # One transaction, no savepoint when already in one: the counter and the write
        # commit together.
        with transaction.atomic(using=self.db, savepoint=False):
            serialized = not connections[self.db].features.has_select_for_update
            if self._project_id is not None and serialized:
                changed = super().update(**kwargs)
                if changed:
                    _projects(self.model).mark_changed(self._project_id)
                return changed
            self._changed_first()
            return super().update(**kwargs)

    def delete(self):
        with transaction.atomic(using=self.db, savepoint=False):
            self._changed_first()
            return super().delete()

    def bulk_create(self, objs, *args, **kwargs):
        objs = list(objs)
        with transaction.atomic(using=self.db, savepoint=False):
            created = super().bulk_create(objs, *args, **kwargs)
            _projects(self.model).mark_changed(*project_ids_of(self.model, objs))
        return created


def project_ids_of(model, objs) -> set[int]:
    """Return the ids of the projects the given (saved or unsaved) rows belong to."""
    first, _, rest = model.project_path.partition("__")
    if not rest:
        return {getattr(obj, first) for obj in objs}
    related = model._meta.get_field(first).related_model
    keys = {getattr(obj, f"{first}_id") for obj in objs}
    return set(related._base_manager.filter(pk__in=keys).values_list(rest, flat=True).distinct())


def _saved(sender, instance, update_fields=None, **kwargs) -> None:
    if update_fields is not None and not _visible(update_fields):
        return
    _projects(sender).mark_changed(*project_ids_of(sender, [instance]))


def _deleted(sender, instance, **kwargs) -> None:
    try:
        ids = project_ids_of(sender, [instance])
    except models.ObjectDoesNotExist:  # deleted along with its project
        return
    _projects(sender).mark_changed(*ids)


def watch(model, *, deletes: bool = True) -> None:
    """Move the project's counter when a row of this model is saved (or deleted: a
    post_delete receiver makes Django load every row a cascade deletes, so models deleted
    only with their project or page leave it out)."""
    models.signals.post_save.connect(_saved, sender=model, weak=False)
    if deletes:
        models.signals.post_delete.connect(_deleted, sender=model, weak=False)
