import time

from django.core.management.base import CommandError

from generation import selectors, services
from generation.kinds import KINDS
from generation.management.base import (
    OperatorCommand,
    add_project_arguments,
    chosen_projects,
    project_status,
    table,
)
from generation.models import OPEN_RUN_STATES, Run

ACTIVE_RUN_STATES = (Run.State.RUNNING, Run.State.STOPPING)


class Command(OperatorCommand):
    help = (
        "Reclaim expired leases, resume halted and paused runs and queue every missing "
        "illustration of the projects. Exit 1 (with --follow) when pages failed or a run "
        "halted, 2 on bad usage."
    )

    def add_arguments(self, parser):
        add_project_arguments(parser)
        parser.add_argument("--dry-run", action="store_true", help="say what would happen")
        parser.add_argument(
            "--follow", action="store_true", help="show progress until the runs finish or halt"
        )
        parser.add_argument(
            "--interval", type=float, default=1.0, help="seconds between --follow updates"
        )
        parser.add_argument(
            "--media",
            choices=["illustrations", "clips", "all"],
            default="illustrations",
            help="what to queue: missing illustrations (default), missing clips, or both",
        )

    def handle(self, *args, **options):
        projects = chosen_projects(options)
        if options["dry_run"]:
            self._dry_run(projects)
            return
        swept = services.sweep()
        rows = []
        for project in projects:
            before = Run.objects.filter(project=project, state__in=OPEN_RUN_STATES).first()
            queued = self._queue(project, options["media"])
            rows.append(
                {
                    "id": project.pk,
                    "title": project.title,
                    "was": before.state if before else "—",
                    "queued": queued.count,
                    "run": queued.run.state if queued.run else "—",
                }
            )
        self.stdout.write(f"Reclaimed {swept['requeued']} job(s) from expired leases.")
        self.stdout.write(
            table(
                rows,
                [
                    ("id", "ID"),
                    ("title", "Title"),
                    ("was", "Run was"),
                    ("queued", "Queued now"),
                    ("run", "Run now"),
                ],
            )
        )
        if options["follow"]:
            if not self._follow(projects, options["interval"]):
                raise CommandError("Some pages failed or a run halted; see above.", returncode=1)

    @staticmethod
    def _queue(project, media: str) -> services.ControlResult:
        """Resume a halted or paused run, then queue what is missing."""
        if media == "clips":
            return services.generate_missing_clips(project=project)
        # Generate Missing never resumes a halted run by itself: the operator's command does.
        resumed = services.resume(project=project).resumed
        queued = services.generate_missing(project=project)
        if media == "all":
            clips = services.generate_missing_clips(project=project)
            return services.ControlResult(
                run=clips.run or queued.run,
                count=queued.count + clips.count,
                resumed=resumed or clips.resumed,
            )
        return services.ControlResult(run=queued.run, count=queued.count, resumed=resumed)

    def _dry_run(self, projects) -> None:
        expired = sum(kind.model.objects.expired().count() for kind in KINDS.values())
        rows = []
        for project in projects:
            run = Run.objects.filter(project=project, state__in=OPEN_RUN_STATES).first()
            rows.append(
                {
                    "id": project.pk,
                    "title": project.title,
                    "run": run.state if run else "—",
                    "resume": "yes" if run and run.state != Run.State.RUNNING else "no",
                    "queue": selectors.missing_pages(project).count(),
                }
            )
        self.stdout.write(f"Would reclaim {expired} job(s) from expired leases.")
        self.stdout.write(
            table(
                rows,
                [
                    ("id", "ID"),
                    ("title", "Title"),
                    ("run", "Run"),
                    ("resume", "Would resume"),
                    ("queue", "Would queue"),
                ],
            )
        )
        self.stdout.write("Dry run: nothing was changed.")

    def _follow(self, projects, interval: float) -> bool:
        """Print progress until no run of the projects is running; return whether every
        page got its picture without a halt."""
        last = None
        while True:
            statuses = [project_status(p) for p in projects]
            pages = sum(s["pages"] for s in statuses)
            done = sum(s["illustrated"] for s in statuses)
            failed = sum(s["failed"] for s in statuses)
            active = sum(s["active"] for s in statuses)
            width = 30
            filled = int(width * done / pages) if pages else width
            line = (
                f"[{'#' * filled}{'.' * (width - filled)}] {done}/{pages} illustrated"
                f" · {active} active · {failed} failed"
            )
            if line != last:
                self.stdout.write(line)
                last = line
            running = [s for s in statuses if s["run"] and s["run"]["state"] in ACTIVE_RUN_STATES]
            if not running:
                break
            time.sleep(interval)
        halted = [s for s in statuses if s["run"] and s["run"]["state"] == Run.State.HALTED]
        for status in halted:
            self.stdout.write(f"Project {status['id']} halted: {status['run']['message']}")
        return not failed and not halted
