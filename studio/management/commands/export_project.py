import resource
import shutil
import sys

from django.core.management.base import CommandError

from generation.management.commands._common import OperatorCommand
from studio.export import run_export
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
        with export.file.open("rb") as built, open(output, "wb") as target:
            shutil.copyfileobj(built, target)
        export.file.delete(save=False)
        export.delete()
        self.stdout.write(f"Wrote {output} ({export.pages_total} pages, {export.missing} missing).")
        if memory:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            sys.stderr.write(f"peak memory: {peak:.1f} MB\n")
