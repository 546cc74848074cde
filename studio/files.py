"""Stored files and their owners: which files a project or page owns, and deleting them
once the rows are gone.

Names: illustrations/<project>/<hex>.png with its thumbnail <hex>.thumb.webp beside it,
clips/<project>/<hex>.<ext>, exports/<project>/<hex>/<title>.<ext>. Only the Storage API
is used (listdir, delete, size, get_modified_time), so all of this works on S3 as on disk.
"""

import logging
from collections.abc import Iterable, Iterator

from django.core.files.storage import default_storage
from django.db import transaction

from generation.models import Clip, Illustration
from generation.thumbnails import thumbnail_name

from .models import Export

logger = logging.getLogger(__name__)

FOLDERS = ("illustrations", "clips", "exports")


def owned_files(*, project=None, pages=None) -> set[str]:
    """Return the stored names owned by a project's rows, or by some pages' rows: every
    version of each page's picture with its thumbnail, every clip, and a project's exports."""
    if (project is None) == (pages is None):
        raise TypeError("owned_files() takes project or pages")
    by_page = {"page__project": project} if project is not None else {"page__in": pages}
    images = _names(Illustration.objects.filter(**by_page), "image")
    names = images | {thumbnail_name(name) for name in images}
    names |= _names(Clip.objects.filter(**by_page), "video")
    if project is not None:
        names |= _names(Export.objects.filter(project=project), "file")
    return names


def project_folders(project_id: int) -> list[str]:
    return [f"{folder}/{project_id}" for folder in FOLDERS]


def delete_after_commit(names: Iterable[str], *, folders: Iterable[str] = ()) -> None:
    """Once the current transaction commits, delete the named files and every file under
    the folders (listed then); a rollback deletes nothing."""
    names, folders = sorted(names), list(folders)

    def delete() -> None:
        delete_files(names)
        for folder in folders:
            delete_files(list(walk(folder)))

    transaction.on_commit(delete)


def delete_files(names: Iterable[str]) -> list[str]:
    """Delete the named files, skipping those already gone. Return the names that could not
    be deleted (logged; purge_orphan_files removes them later): the rows are gone already,
    so a storage error here must not turn a finished deletion into an error page."""
    failed = []
    for name in names:
        try:
            default_storage.delete(name)
        except FileNotFoundError:
            pass
        except Exception:
            failed.append(name)
            logger.warning("Could not delete the stored file %s", name, exc_info=True)
    return failed


def walk(folder: str) -> Iterator[str]:
    """Yield the name of every file stored under a folder (none if it does not exist)."""
    try:
        folders, files = default_storage.listdir(folder)
    except FileNotFoundError:
        return
    for name in sorted(files):
        yield f"{folder}/{name}"
    for name in sorted(folders):
        yield from walk(f"{folder}/{name}")


def _names(queryset, field: str) -> set[str]:
    return set(queryset.exclude(**{field: ""}).values_list(field, flat=True))
