"""Writes the ORM compiles once per process, then runs again with other values.

A worker's hot path makes the same few compare-and-set UPDATEs for every picture (claim,
start a call, complete), each built from the state tables (generation.machines) with
guards, subqueries and the project's change counter (studio.changes). Building and
compiling such a statement with the ORM cost the worker more than running it (about 1 ms
against 0.1 ms on SQLite), and on SQLite the claim's is built while the worker holds the
write lock that every other worker waits for.

`write(name, action, **values)` runs `action(**values)`, the ordinary ORM write, once per
shape with markers in place of the values, capturing the statements it would execute
(nothing runs); later calls run the captured statements with the values in the markers'
places. Everything else about the write comes from the ORM path itself, so the two cannot
differ: the conditions, the counter statement, and the rule that a statement after the
write's own UPDATE runs only when that UPDATE changed a row (the counter of a
compare-and-set that lost must not move; studio.changes). A write whose capture is not a
plain sequence of UPDATEs with every marker found among its parameters is never cached:
it runs through the ORM each time, as before.

Values that are `str` or `int` become markers; any other value (None, a bool, a Decimal,
an expression) is part of the shape, so a statement is never reused for another one.

`get(name, build, **values)` does the same for a read of one row: `build(**values)` is a
queryset (with its joins and annotations), compiled once per shape; later reads run its
SQL with the values in the markers' places and make the instance as the ORM's own
iterable does (the row's columns, the related objects, the annotations).
"""

import itertools
import logging
import threading
from collections.abc import Callable

from django.db import connections, transaction
from django.db.models.query import get_related_populators

# Far from any id, count or length the studio writes: a parameter equal to a marker is
# one (checked: every marker must be found, and none may be written into the SQL itself).
_INT_MARKER_BASE = 7_340_032_000_000_000
_MAX_SHAPES = 256  # beyond this, new shapes run through the ORM (a bound on memory)

logger = logging.getLogger(__name__)

_UNCACHEABLE = object()
_templates: dict[tuple, object] = {}
_lock = threading.Lock()


class _Statement:
    __slots__ = ("sql", "params", "slots", "after")

    def __init__(self, sql: str, params: list, slots: list[tuple[int, str]], after: bool):
        self.sql, self.params, self.slots, self.after = sql, params, slots, after


class _Template:
    """The captured statements of one write, the index of the write's own UPDATE among
    them, and where each value goes."""

    def __init__(self, statements: list[_Statement], main: int):
        self.statements, self.main = statements, main

    def run(self, using: str, values: dict) -> int:
        changed = 0
        with transaction.atomic(using=using, savepoint=False):
            with connections[using].cursor() as cursor:
                for index, statement in enumerate(self.statements):
                    if statement.after and not changed:
                        break
                    params = list(statement.params)
                    for position, name in statement.slots:
                        params[position] = values[name]
                    cursor.execute(statement.sql, params)
                    if index == self.main:
                        changed = cursor.rowcount
        return changed


def write(
    name: str, action: Callable[..., int], *, table: str, using: str = "default", **values
) -> int:
    """Run `action(**values)`, an ORM write that returns the rows its UPDATE of `table`
    changed, from statements compiled once per name and shape of the values. Return what
    the action returns."""
    markers, literal = _markers(values)
    shape = (using, name, table, tuple(sorted(markers)), tuple(literal))
    template = _templates.get(shape)
    if template is None:
        template = _capture(action, table, using, values, markers)
        with _lock:
            if len(_templates) < _MAX_SHAPES:
                _templates[shape] = template
    if template is _UNCACHEABLE:
        return action(**values)
    return template.run(using, {key: values[key] for key in markers})


def _markers(values: dict) -> tuple[dict, list]:
    markers, literal = {}, []
    counter = itertools.count()
    for key, value in sorted(values.items()):
        if type(value) is str:
            markers[key] = f"\x00prepared-{next(counter)}\x00"
        elif type(value) is int:
            markers[key] = _INT_MARKER_BASE + next(counter)
        else:
            literal.append((key, repr(value)))
    return markers, literal


class _Read:
    """A compiled SELECT of one model's rows, with where each value goes and how its rows
    become instances."""

    def __init__(self, queryset, using: str, markers: dict):
        compiler = queryset.query.get_compiler(using=using)
        self.sql, params = compiler.as_sql()
        by_value = {value: key for key, value in markers.items()}
        if any(str(marker) in self.sql for marker in markers.values()):
            raise ValueError("a value written into the SQL itself")
        self.params = list(params)
        self.slots = [
            (position, by_value[param])
            for position, param in enumerate(self.params)
            if type(param) in (str, int) and param in by_value
        ]
        if {name for _, name in self.slots} != set(markers):
            raise ValueError("a value not found among the parameters")
        self.compiler, self.using = compiler, using
        klass_info, select = compiler.klass_info, compiler.select
        fields = klass_info["select_fields"]
        self.columns = slice(fields[0], fields[-1] + 1)
        self.model = klass_info["model"]
        self.init_list = [column[0].target.attname for column in select[self.columns]]
        self.related = get_related_populators(klass_info, select, using)
        self.annotations = dict(compiler.annotation_col_map)
        self.converters = compiler.get_converters([column[0] for column in select])

    def run(self, values: dict) -> list:
        params = list(self.params)
        for position, name in self.slots:
            params[position] = values[name]
        with connections[self.using].cursor() as cursor:
            cursor.execute(self.sql, params)
            rows = cursor.fetchall()
        if self.converters:
            rows = self.compiler.apply_converters(rows, self.converters)
        found = []
        for row in rows:
            instance = self.model.from_db(self.using, self.init_list, row[self.columns])
            for populator in self.related:
                populator.populate(row, instance)
            for name, position in self.annotations.items():
                setattr(instance, name, row[position])
            found.append(instance)
        return found


def get(name: str, build: Callable, *, using: str = "default", **values):
    """Return the one instance `build(**values)` (a queryset) finds, from SQL compiled
    once per name and shape of the values; raise the model's DoesNotExist (or
    MultipleObjectsReturned) as QuerySet.get does."""
    markers, literal = _markers(values)
    shape = (using, "get", name, tuple(sorted(markers)), tuple(literal))
    read = _templates.get(shape)
    if read is None:
        try:
            read = _Read(build(**{**values, **markers}), using, markers)
        except ValueError:
            logger.debug("Not caching the read %s", name, exc_info=True)
            read = _UNCACHEABLE
        with _lock:
            if len(_templates) < _MAX_SHAPES:
                _templates[shape] = read
    if read is _UNCACHEABLE:
        return build(**values).get()
    found = read.run({key: values[key] for key in markers})
    if len(found) == 1:
        return found[0]
    model = read.model
    if not found:
        raise model.DoesNotExist(f"{model._meta.object_name} matching query does not exist.")
    raise model.MultipleObjectsReturned(f"get() returned more than one {model._meta.object_name}")


def _capture(action, table: str, using: str, values: dict, markers: dict):
    """Return the template of the statements `action` executes with markers for values
    (executing none of them), or _UNCACHEABLE."""
    captured: list[tuple[str, list]] = []

    def record(execute, sql, params, many, context):
        # Nothing runs: the cursor's rowcount stays -1 (DB-API: no execute), which the
        # ORM path takes as "changed", so the statements it runs only after a change (the
        # project's counter) are captured too.
        captured.append((sql, list(params or ())))

    connection = connections[using]
    arguments = {**values, **markers}
    try:
        # A savepoint of its own: whatever the capture meets must not doom the caller's
        # transaction.
        with transaction.atomic(using=using), connection.execute_wrapper(record):
            action(**arguments)
    except Exception:  # a write this module cannot replay (it reads what it wrote, …)
        logger.debug("Not caching %s: its capture failed", table, exc_info=True)
        return _UNCACHEABLE
    return _template_of(captured, table, markers) or _UNCACHEABLE


def _template_of(captured, table: str, markers: dict) -> _Template | None:
    by_value = {value: key for key, value in markers.items()}
    quoted = f'UPDATE "{table}" '
    statements, found, main = [], set(), None
    for sql, params in captured:
        if sql.startswith(("BEGIN", "SAVEPOINT", "RELEASE")):
            continue
        if not sql.startswith("UPDATE "):
            return None
        if any(str(marker) in sql for marker in markers.values()):
            return None  # a value written into the SQL itself
        slots = []
        for position, param in enumerate(params):
            if type(param) in (str, int) and param in by_value:
                slots.append((position, by_value[param]))
                found.add(by_value[param])
        after = main is not None
        if main is None and sql.startswith(quoted):
            main = len(statements)
        statements.append(_Statement(sql, params, slots, after))
    if main is None or found != set(markers):
        return None
    return _Template(statements, main)


def clear() -> None:
    """Forget every template (tests that change settings a shape depends on)."""
    with _lock:
        _templates.clear()
