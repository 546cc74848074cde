import sys
from pathlib import Path

from django.core.files.storage import default_storage
from django.core.management.base import CommandError

from generation.management.base import OperatorCommand
from studio.export import run_export
from studio.files import read_chunks
from studio.models import Export, Project


class Command(OperatorCommand):
    help = "Export a project now, in this process: a ZIP of pictures or a PDF book."

    def add_arguments(self, parser):
        parser.add_argument("project", type=int, help="the project's id")
        parser.add_argument("--format", choices=["zip", "pdf"], default="zip")
        parser.add_argument("--page-size", choices=["a4", "letter", "square"], default="a4")
        parser.add_argument("--output", required=True, help="where to write the file")
        parser.add_argument(
            "--memory", action="store_true", help="print this process's peak memory (MB) on stderr"
        )

    def handle(self, *args, project, format, page_size, output, memory, **options):
        found = Project.objects.filter(pk=project).first()
        if found is None:
            raise CommandError(f"no project with id {project}", returncode=2)
        export = Export.objects.create(project=found, format=format, page_size=page_size)
        run_export(export)
        export.refresh_from_db()
        with open(output, "wb") as target:  # chunk by chunk, from disk or S3
            for chunk in read_chunks(default_storage.open(export.file.name, "rb")):
                target.write(chunk)
        export.file.delete(save=False)
        export.delete()
        self.stdout.write(f"Wrote {output} ({export.pages_total} pages, {export.missing} missing).")
        if memory:
            sys.stderr.write(f"peak memory: {peak_memory_mb():.1f} MB\n")


def peak_memory_mb() -> float:
    """Return this process's peak resident memory. VmHWM, not ru_maxrss: on Linux the
    latter keeps the parent's peak across fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
