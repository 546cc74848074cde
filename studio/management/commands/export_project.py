import argparse
import sys
from pathlib import Path

from django.core.files.storage import default_storage
from django.core.management.base import CommandError

from generation.management.base import OperatorCommand
from studio.export import export_trim, run_export
from studio.files import read_chunks
from studio.geometry import INCH, PAPERS, PRINT_DPI, Book, Cover, parse_trim
from studio.models import Export, Project
from studio.printing import is_low, report_lines


def trim_argument(value: str) -> str:
    try:
        return parse_trim(value).key
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


class Command(OperatorCommand):
    help = (
        "Export a project now, in this process: a ZIP of pictures, a PDF book, the print-ready "
        "interior or cover, or a fixed-layout EPUB. print and cover print their resolution "
        "report: one line per page under 300 DPI."
    )

    def add_arguments(self, parser):
        parser.add_argument("project", type=int, help="the project's id")
        parser.add_argument("--format", choices=Export.Format.values, default="zip")
        parser.add_argument(
            "--page-size", choices=Export.PageSize.values, default="a4", help="for pdf"
        )
        parser.add_argument(
            "--trim",
            type=trim_argument,
            help="for print, cover and epub: 8.5x8.5, 8x10, 8.5x11, 8.25x8.25, a4 or WxH in "
            "inches (default: the project's)",
        )
        parser.add_argument(
            "--paper",
            choices=list(PAPERS),
            help="for cover: the spine's paper (default: the project's)",
        )
        parser.add_argument(
            "--resample",
            action="store_true",
            help="print and cover: resample pictures under 300 DPI to 300 DPI here (Lanczos; "
            "smoother, no added detail); the report marks them",
        )
        parser.add_argument("--output", required=True, help="where to write the file")
        parser.add_argument(
            "--memory", action="store_true", help="print this process's peak memory (MB) on stderr"
        )

    def handle(
        self, *args, project, format, page_size, trim, paper, resample, output, memory, **options
    ):
        found = Project.objects.filter(pk=project).first()
        if found is None:
            raise CommandError(f"no project with id {project}", returncode=2)
        export = Export.objects.create(
            project=found,
            format=format,
            page_size=page_size,
            trim=trim or found.trim,
            paper=paper or found.paper,
            resample=resample,
        )
        run_export(export)
        export.refresh_from_db()
        with open(output, "wb") as target:  # chunk by chunk, from disk or S3
            for chunk in read_chunks(default_storage.open(export.file.name, "rb")):
                target.write(chunk)
        export.file.delete(save=False)
        export.delete()
        self.stdout.write(self.written(export, output))
        if format in (Export.Format.PRINT, Export.Format.COVER):
            self.write_report(export)
        if memory:
            sys.stderr.write(f"peak memory: {peak_memory_mb():.1f} MB\n")

    def written(self, export: Export, output: str) -> str:
        """Return the first line: what was written (the same whatever pictures are drawn)."""
        if export.format in (Export.Format.ZIP, Export.Format.PDF):
            return f"Wrote {output} ({export.pages_total} pages, {export.missing} missing)."
        trim = export_trim(export)
        sheets = Book(trim=trim, pages=export.pages_total).sheet_count
        if export.format == Export.Format.COVER:
            cover = Cover(trim=trim, pages=sheets, paper=export.paper)
            return (
                f"Wrote {output}: the cover at {trim.label} on {export.paper} paper, "
                f"{cover.width / INCH:.3f} × {cover.height / INCH:.3f} in, its spine "
                f"{cover.spine / INCH:.3f} in for {sheets} pages."
            )
        what = "the print interior" if export.format == Export.Format.PRINT else "an EPUB"
        return f"Wrote {output}: {what} at {trim.label}, {sheets} pages."

    def write_report(self, export: Export) -> None:
        trim = export_trim(export)
        low = [entry for entry in export.report if is_low(entry)]
        if export.missing:
            self.stdout.write(
                f"{export.missing} page(s) have no picture yet: a marked placeholder prints."
            )
        if not low:
            self.stdout.write(f"Every picture prints at {PRINT_DPI} DPI or more at {trim.label}.")
        for line in report_lines(export.report):
            self.stdout.write(line)
        if low and not export.resample:
            self.stdout.write(
                f"{len(low)} picture(s) print under {PRINT_DPI} DPI at {trim.label}: choose a "
                "larger size from the service (STUDIO_IMAGE_SIZE) and regenerate them, "
                "upscale them through a service on the project's Export page (where one is "
                "configured), or export again with --resample to resample them here."
            )


def peak_memory_mb() -> float:
    """Return this process's peak resident memory. VmHWM, not ru_maxrss: on Linux the
    latter keeps the parent's peak across fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
