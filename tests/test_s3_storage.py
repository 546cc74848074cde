"""What differs when the files live on S3, against a real S3 server over HTTP (tests/s3.py:
moto in server mode, reached through django-storages and boto3 as they are).

The storage tests elsewhere (marked `storage`) run a second time on S3 with STUDIO_TEST_S3=1;
these cover what only S3 does: a storage that answers 503, a listing that still names a file
deleted since, exports far larger than a picture streamed out, and settings that need a disk.
"""

import io
import os
import subprocess
import sys
import tracemalloc
from decimal import Decimal
from io import StringIO

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from generation import services
from generation.models import GenerationAttempt, Illustration, ProviderAccount, Run, SpendEntry
from studio import files
from studio.models import Export
from tests import s3
from tests.conftest import ROOT, S3, stored_names, use_bucket, worker_env

pytestmark = [
    pytest.mark.skipif(not S3, reason="STUDIO_TEST_S3=1 runs these against a local S3 server"),
    pytest.mark.django_db,
]

Status = Illustration.Status


@pytest.fixture
def bucket(settings) -> str:
    return use_bucket(settings)


@pytest.fixture
def proxy():
    """The S3 server behind a proxy that can answer 503 to everything: a storage that is
    down."""
    proxy = s3.DownableProxy(os.environ["STUDIO_TEST_S3_URL"]).start()
    yield proxy
    proxy.stop()


def test_a_storage_answering_503_halts_as_a_full_disk_does_and_one_resume_finishes(
    settings, proxy, make_project, openai_settings, fake_openai, drain
):
    use_bucket(settings, endpoint=proxy.url)
    openai_settings.STUDIO_PRICES = {"openai:gpt-image-1": "0.04"}
    first, second = make_project(pages=2, title="First"), make_project(pages=2, title="Second")
    runs = [services.generate_missing(project=p).run for p in (first, second)]
    proxy.down = True
    drain(runs[0].pk)
    drain(runs[1].pk)
    drain(runs[0].pk)  # a second look (or a sweep) must not call again

    assert proxy.refused >= 1
    assert fake_openai.call_count == 1  # the second project paid for nothing it cannot keep
    assert set(Run.objects.values_list("state", "halt_reason")) == {("halted", "storage")}
    run = Run.objects.get(pk=runs[0].pk)
    assert "could not save a picture" in run.message and "(503)" in run.message
    attempt = GenerationAttempt.objects.get()
    assert (attempt.outcome, attempt.cost) == (GenerationAttempt.Outcome.SUCCESS, Decimal("0.04"))
    assert SpendEntry.objects.get().amount == Decimal("0.04")
    assert Illustration.objects.filter(status=Status.QUEUED).count() == 4  # none stuck
    assert ProviderAccount.objects.filter(state="halted").count() == 0  # not the service's

    proxy.down = False  # the storage is back
    services.resume(project=second)  # one Resume
    for run in runs:
        drain(run.pk)
    complete = Illustration.objects.filter(status=Status.COMPLETE)
    assert complete.count() == 4
    assert fake_openai.call_count == 1 + 4
    names = set(complete.values_list("image", flat=True))
    assert names <= set(stored_names(None))  # in the bucket, as boto3 lists it


def test_a_file_listed_but_deleted_since_is_skipped_by_the_purge(bucket, make_project):
    project = make_project(pages=1)
    kept = Illustration.objects.create(page=project.pages.get(), status=Status.COMPLETE)
    kept.image.save("illustration.png", ContentFile(b"png" * 100))
    left = [f"illustrations/{project.pk}/{name}.png" for name in ("a", "b", "c")]
    for name in left:
        default_storage.save(name, ContentFile(b"x" * 10))

    search = files.OrphanSearch(written_before=timezone.now() + timezone.timedelta(seconds=2))
    found = iter(search)
    first = next(found)  # the folder is listed by now, b.png with it
    s3.client(os.environ["STUDIO_TEST_S3_URL"]).delete_object(Bucket=bucket, Key=left[1])
    rest = list(found)

    assert [first.name, *(orphan.name for orphan in rest)] == [left[0], left[2]]
    assert (first.size, search.too_new) == (10, 0)


def test_the_purge_leaves_fresh_files_and_removes_old_orphans_from_the_bucket(bucket, make_project):
    project = make_project(pages=1)
    kept = Illustration.objects.create(page=project.pages.get(), status=Status.COMPLETE)
    kept.image.save("illustration.png", ContentFile(b"png" * 100))
    orphan = f"clips/{project.pk}/killed.mp4"
    default_storage.save(orphan, ContentFile(b"x" * 3000))

    def purge(*args) -> list[str]:
        out = StringIO()
        call_command("purge_orphan_files", *args, stdout=out)
        return out.getvalue().splitlines()

    assert purge() == [
        "Removed 0 orphan files (0 bytes).",
        "Skipped 1 unowned file written in the last 15 minutes.",
    ]
    assert purge("--min-age", "0") == [f"{orphan}  2.9 KB", "Removed 1 orphan file (2.9 KB)."]
    assert stored_names(None) == [kept.image.name]


LARGE = 24 * 1024 * 1024


@pytest.fixture
def large_export(bucket, make_project, editor):
    """A finished export of 24 MB in the bucket (a long book's PDF)."""
    export = Export.objects.create(
        project=make_project(pages=1), format="pdf", status=Export.Status.COMPLETE
    )
    export.file.save("a-long-book.pdf", ContentFile(os.urandom(1024 * 1024) * 24), save=True)
    return export


def test_a_large_export_is_streamed_from_the_bucket_never_held_whole(client, editor, large_export):
    client.force_login(editor)
    tracemalloc.start()
    try:
        response = client.get(reverse("export-download", args=[large_export.pk]))
        received = sum(len(chunk) for chunk in response.streaming_content)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert (response.status_code, int(response["Content-Length"]), received) == (
        200,
        LARGE,
        LARGE,
    )
    assert peak < 4 * 1024 * 1024, f"{peak / 2**20:.1f} MB held to send {LARGE / 2**20:.0f} MB"


def test_export_project_copies_the_built_file_out_of_the_bucket_in_chunks(
    bucket, make_project, tmp_path
):
    project = make_project(pages=3)
    output = tmp_path / "book.zip"
    out = StringIO()
    call_command("export_project", project.pk, "--output", str(output), stdout=out)

    assert out.getvalue() == f"Wrote {output} (3 pages, 3 missing).\n"
    with io.BytesIO(output.read_bytes()) as data:
        import zipfile

        names = zipfile.ZipFile(data).namelist()
    assert sorted(names)[:3] == ["manifest.json", "page-01-missing.png", "page-01.txt"]
    assert stored_names(None) == []  # the built file left the bucket with its row


def test_x_sendfile_is_refused_with_s3_for_a_bucket_has_no_local_path(bucket):
    env = worker_env(STUDIO_SENDFILE_HEADER="X-Sendfile")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "STUDIO_SENDFILE_HEADER=X-Sendfile needs files on disk, not S3" in result.stderr
