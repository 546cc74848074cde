import argparse
import sys
import time
from pathlib import Path

from django.core.files.storage import default_storage
from django.core.management.base import CommandError
from django.db.models import Sum

from generation.engine import run_next_job
from generation.management.base import OperatorCommand
from generation.models import ACTIVE_STATUSES, GenerationAttempt, Run, SpendEntry, Upscale
from generation.pricing import amount, money
from generation.providers import upscale_configured
from generation.services import upscale_pages
from studio.book import SERVICE_LABELS, low_resolution_pages
from studio.export import export_trim, run_export
from studio.files import read_chunks
from studio.geometry import INCH, PAPERS, PRINT_DPI, Book, Cover, parse_trim
from studio.models import Export, Project
from studio.printing import is_low, report_lines

# How long --upscale waits for upscales another worker holds, with none to work here.
UPSCALE_PATIENCE = 600.0


def trim_argument(value: str) -> str:
    try:
        return parse_trim(value).key
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


class Command(OperatorCommand):
    quiet = True  # its own lines only: --upscale's calls log at INFO (--verbosity 2 shows them)
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
        parser.add_argument(
            "--upscale",
            action="store_true",
            help="print and cover: first upscale the pictures under 300 DPI through the "
            "configured upscale service (STUDIO_UPSCALE_PROVIDER; a paid call each, journalled "
            "and in the ledger), in this process; the report marks them",
        )
        parser.add_argument("--output", required=True, help="where to write the file")
        parser.add_argument(
            "--memory", action="store_true", help="print this process's peak memory (MB) on stderr"
        )

    def handle(
        self,
        *args,
        project,
        format,
        page_size,
        trim,
        paper,
        resample,
        upscale,
        output,
        memory,
        **options,
    ):
        found = Project.objects.filter(pk=project).first()
        if found is None:
            raise CommandError(f"no project with id {project}", returncode=2)
        if upscale:
            if format not in (Export.Format.PRINT, Export.Format.COVER):
                raise CommandError("--upscale is for --format print or cover", returncode=2)
            if not upscale_configured():
                raise CommandError(
                    "--upscale needs an upscale service (STUDIO_UPSCALE_PROVIDER and its key); "
                    "--resample resamples the pictures here instead",
                    returncode=2,
                )
            self.upscale(found, parse_trim(trim or found.trim))
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

    def upscale(self, project: Project, trim) -> None:
        """Upscale the project's pictures under 300 DPI at `trim` through the configured
        service, as the Export page's button does (the same jobs in the project's run), and
        work them here (a running qcluster may take some): wait until none is on its way,
        or the run stops, pauses or halts (said on stderr; the export goes on)."""
        pages = [
            low
            for low in low_resolution_pages(project, trim)
            if not low.upscaling and low.upscaled is None
        ]
        result = upscale_pages(project=project, page_ids=[low.page_id for low in pages])
        if result.run is None:
            self.stdout.write("No picture needs an upscale.")
            return
        started = set(
            Upscale.objects.filter(run=result.run, page__project=project).values_list(
                "pk", flat=True
            )
        )
        active = Upscale.objects.filter(pk__in=started, status__in=ACTIVE_STATUSES)
        idle_since = time.monotonic()
        while active.exists():
            if run_next_job(result.run.pk, "upscale") is not None:
                idle_since = time.monotonic()
                continue
            run = Run.objects.get(pk=result.run.pk)
            if run.state != Run.State.RUNNING:
                sys.stderr.write(f"The upscale stopped: the run is {run.state}. {run.message}\n")
                break
            if time.monotonic() - idle_since > UPSCALE_PATIENCE:
                sys.stderr.write("Gave up waiting for the upscales (another worker holds them).\n")
                break
            time.sleep(1)  # another worker has one, or one waits for its retry
        done = Upscale.objects.filter(pk__in=started)
        complete = done.filter(status=Upscale.Status.COMPLETE)
        spent = SpendEntry.objects.filter(
            kind="upscale",
            attempt_id__in=GenerationAttempt.objects.filter(upscale__in=done).values("pk"),
        ).aggregate(total=Sum("amount"))["total"]
        first = complete.first() or done.first()
        self.stdout.write(
            f"Upscaled {complete.count()} of {len(started)} picture(s) "
            f"×{first.scale} through {SERVICE_LABELS.get(first.provider, first.provider)} "
            f"({first.model}), {money(amount(spent))}."
        )
        for failed in done.filter(status=Upscale.Status.FAILED).select_related("page"):
            self.stdout.write(
                f"Page {failed.page.number}: the upscale failed: {failed.error_message}"
            )


def peak_memory_mb() -> float:
    """Return this process's peak resident memory. VmHWM, not ru_maxrss: on Linux the
    latter keeps the parent's peak across fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
