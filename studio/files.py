"""Stored files: answering them to a browser, which files a project or page owns, deleting
them once the rows are gone, and finding the files no row owns.

Names: illustrations/<project>/<hex>.png with its thumbnail <hex>.thumb.webp beside it,
clips/<project>/<hex>.<ext>, exports/<project>/<hex>/<title>.<ext>, references/<project>/<hex>.<ext>
(characters' reference pictures), upscales/<project>/<hex>.png (the print export's
upscales). Only the Storage API is used (listdir, delete, size, get_modified_time), so all of
this works on S3 as on disk.
"""

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.http import FileResponse, HttpResponse, StreamingHttpResponse

from generation.models import (
    ACTIVE_STATUSES,
    Clip,
    CoverJob,
    GenerationAttempt,
    Illustration,
    Upscale,
)
from generation.thumbnails import thumbnail_name

from .models import Export, ReferenceImage

logger = logging.getLogger(__name__)

FOLDERS = ("illustrations", "clips", "exports", "references", "upscales", "covers")
# Orphan candidates are checked against every row in batches of this many names.
NAME_BATCH = 500


def owned_files(*, project=None, pages=None) -> set[str]:
    """Return the stored names owned by a project's rows, or by some pages' rows: every
    version of each page's picture with its thumbnail, every clip and upscale, and a
    project's exports."""
    if (project is None) == (pages is None):
        raise TypeError("owned_files() takes project or pages")
    by_page = {"page__project": project} if project is not None else {"page__in": pages}
    images = _names(Illustration.objects.filter(**by_page), "image")
    names = images | {thumbnail_name(name) for name in images}
    names |= _names(Clip.objects.filter(**by_page), "video")
    names |= _names(Upscale.objects.filter(**by_page), "image")
    if project is not None:
        names |= _names(Export.objects.filter(project=project), "file")
        names |= _names(ReferenceImage.objects.filter(character__project=project), "image")
        names |= _names(CoverJob.objects.filter(project=project), "image")
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


@dataclass(frozen=True)
class StoredFile:
    name: str
    size: int


class OrphanSearch:
    """Iterating yields the stored files under the studio's folders that no row names (and
    that are not the thumbnail of a named image), among those last written before the given
    time; afterwards, too_new counts the unowned files it left alone for being younger.

    One project folder at a time, so memory grows with the largest project, not the store,
    and a caller may delete each file as it comes.
    """

    def __init__(self, *, written_before: datetime):
        self.written_before = written_before
        self.too_new = 0

    def __iter__(self) -> Iterator[StoredFile]:
        for group in _groups():
            project_id = _project_id(group)
            owned = set() if project_id is None else owned_files(project=project_id)
            unowned = [name for name in _group_files(group) if name not in owned]
            named = _named_elsewhere(unowned)
            for name in unowned:
                if name in named:
                    continue
                found = _written_and_size(name)
                if found is None:
                    continue  # listed, but gone since: nothing to purge
                # The storage's clock against ours: the grace period dwarfs any skew.
                if found[0] >= self.written_before:
                    self.too_new += 1
                else:
                    yield StoredFile(name, found[1])


def _written_and_size(name: str) -> tuple[datetime, int] | None:
    """Return when a listed file was last written and its size, or None when it is gone.

    A listing is a snapshot, and on S3-compatible stores that list eventually it may still
    name a file deleted a moment ago (by a page's deletion, or a purge running beside this
    one): such a file is skipped, never an error. A file written after the listing is
    simply not seen until the next purge."""
    try:
        return default_storage.get_modified_time(name), default_storage.size(name)
    except FileNotFoundError:
        return None
    except Exception as error:
        if not_found(error):
            return None
        raise


def not_found(error: Exception) -> bool:
    """Return whether a storage's error says the file does not exist: boto3's errors carry
    the S3 answer (django-storages turns only some of them into FileNotFoundError)."""
    answer = getattr(error, "response", None) or {}
    code = str(answer.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound"}


def _names(queryset, field: str) -> set[str]:
    return set(queryset.exclude(**{field: ""}).values_list(field, flat=True))


def _groups() -> list[str]:
    """Return the project folder names found under any of the studio's folders, and ""
    for files stored directly in one of them."""
    groups = set()
    for folder in FOLDERS:
        try:
            folders, files = default_storage.listdir(folder)
        except FileNotFoundError:
            continue
        groups |= set(folders)
        if files:
            groups.add("")
    return sorted(
        groups, key=lambda group: (_project_id(group) is None, _project_id(group) or 0, group)
    )


def _project_id(group: str) -> int | None:
    """Return the project id a folder is named after, if it is named after one."""
    return int(group) if group.isascii() and group.isdigit() and len(group) < 19 else None


def _group_files(group: str) -> Iterator[str]:
    """Yield the files of a project folder group, or the files stored directly in the
    studio's folders for the group ""."""
    for folder in FOLDERS:
        if group:
            yield from walk(f"{folder}/{group}")
            continue
        try:
            files = default_storage.listdir(folder)[1]
        except FileNotFoundError:
            continue
        yield from (f"{folder}/{name}" for name in sorted(files))


def _named_elsewhere(candidates: list[str]) -> set[str]:
    """Return the candidates that some row names after all (a row can be moved to another
    project in the admin), with the thumbnails of those that are images."""
    named = set()
    for start in range(0, len(candidates), NAME_BATCH):
        batch = candidates[start : start + NAME_BATCH]
        for model, field in (
            (Illustration, "image"),
            (Clip, "video"),
            (Upscale, "image"),
            (CoverJob, "image"),
            (Export, "file"),
            (ReferenceImage, "image"),
        ):
            named |= set(
                model.objects.filter(**{f"{field}__in": batch}).values_list(field, flat=True)
            )
        # A paid picture the call journal names, whose job has not completed yet (its
        # worker was lost after storing it): its next worker completes the job from it.
        waiting = (
            Q(illustration__status__in=ACTIVE_STATUSES)
            | Q(sheet__status__in=ACTIVE_STATUSES)
            | Q(upscale__status__in=ACTIVE_STATUSES)
            | Q(cover__status__in=ACTIVE_STATUSES)
        )
        named |= set(
            GenerationAttempt.objects.filter(waiting, storage_name__in=batch).values_list(
                "storage_name", flat=True
            )
        )
    thumbnails = {thumbnail_name(name) for name in named}
    return named | (thumbnails & set(candidates))


def private_file(name: str, content_type: str) -> HttpResponse:
    """Answer with a stored file the caller has already checked access to.

    With STUDIO_SENDFILE_HEADER set, the web server sends the file (nginx X-Accel-Redirect
    to an internal location, or Apache X-Sendfile); otherwise Django streams it.
    """
    header = settings.STUDIO_SENDFILE_HEADER
    if header == "X-Accel-Redirect":
        response = HttpResponse(content_type=content_type)
        response[header] = settings.STUDIO_SENDFILE_PREFIX.rstrip("/") + "/" + name
    elif header == "X-Sendfile":
        response = HttpResponse(content_type=content_type)
        response[header] = default_storage.path(name)
    else:
        stored = default_storage.open(name, "rb")
        if remote_object(stored) is None:
            response = FileResponse(stored, content_type=content_type)
        else:
            response = StreamingHttpResponse(read_chunks(stored), content_type=content_type)
            response["Content-Length"] = str(stored.size)
    response["Cache-Control"] = "private, max-age=86400"
    return response


CHUNK = 256 * 1024


def remote_object(stored):
    """Return the S3 object behind a file opened through the storage (django-storages'
    S3File keeps it as .obj, not yet downloaded), or None for a file on disk."""
    return getattr(stored, "obj", None)


def read_chunks(stored) -> Iterator[bytes]:
    """Yield a file opened through the storage in chunks, then close it. From S3 the chunks
    come off the wire as they arrive: django-storages would otherwise download the whole
    object before the first byte, so a large export is streamed, never held whole."""
    try:
        remote = remote_object(stored)
        if remote is None:
            while chunk := stored.read(CHUNK):
                yield chunk
        else:
            body = remote.get()["Body"]
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()
    finally:
        stored.close()
