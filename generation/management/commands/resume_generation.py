import time

from django.core.management.base import CommandError

from generation import selectors, services
from generation.batches import EconomyRefused
from generation.kinds import KINDS
from generation.management.base import (
    OperatorCommand,
    add_project_arguments,
    chosen_projects,
    project_status,
    usage_error,
)
from generation.models import OPEN_RUN_STATES, Run
from generation.runs import queued_counts
from studio.models import Project
from studio.text import plural

ACTIVE_RUN_STATES = (Run.State.RUNNING, Run.State.STOPPING)
WAITING_STATES = (Run.State.HALTED, Run.State.PAUSED)


class Command(OperatorCommand):
    help = (
        "Reclaim expired leases and set halted and paused runs going again (what an operator "
        "runs after credits are restored or an outage ends); projects named with --project "
        "also get their missing illustrations queued. One line per project. Exit 1 (with "
        "--follow) when pages failed or a run halted, 2 on bad usage."
    )
    quiet = True

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
            help="what --project queues: missing illustrations (default), missing clips, or both",
        )
        parser.add_argument(
            "--mode",
            choices=["now", "economy"],
            default="now",
            help="now (default), or economy: the missing illustrations go to the service as "
            "one batch job, within 24 h at half price, where the service and model take "
            "batches",
        )

    def handle(self, *args, **options):
        # --all is "after a top-up or an outage": only what waits is set going, and no book
        # nobody asked to draw is started. A project named with --project was asked for.
        named = not options["all"]
        if options["all"] and options["project"]:
            raise usage_error("use --project ID or --all, not both")
        projects = chosen_projects(options) if named else waiting_projects()
        before = {run.project_id: run for run in open_runs(projects)}
        if options["dry_run"]:
            self._dry_run(projects, before, named=named, media=options["media"])
            return
        swept = services.sweep()
        if swept["requeued"]:
            self.stdout.write(f"Reclaimed {swept['requeued']} job(s) from expired leases.")
        for project in projects:
            was = before.get(project.pk)
            if was is not None and was.state in WAITING_STATES:
                services.resume(project=project)  # may have been resumed with its account
            try:
                queued = self._queue(project, options["media"], options["mode"]) if named else 0
            except EconomyRefused as refused:
                raise usage_error(f"project {project.pk}: {refused}") from None
            self.stdout.write(self._line(project, was, queued))
        if not projects:
            self.stdout.write("Nothing was halted or paused: nothing to resume.")
        if options["follow"]:
            if not self._follow(projects, options["interval"]):
                raise CommandError("Some pages failed or a run halted; see above.", returncode=1)

    @staticmethod
    def _queue(project: Project, media: str, mode: str = "now") -> int:
        """Queue the project's missing illustrations (now, or as a batch) and/or clips;
        return how many."""
        queued = 0
        if media in ("illustrations", "all"):
            queued += services.generate_missing(project=project, mode=mode).count
        if media in ("clips", "all"):
            queued += services.generate_missing_clips(project=project).count
        return queued

    def _line(self, project: Project, was: Run | None, queued: int) -> str:
        parts = []
        if was is not None and was.state in WAITING_STATES:
            parts.append(f"the {_described(was)} is running again")
        if queued and run_mode(project) == Run.Mode.ECONOMY:
            parts.append(f"sent {plural(queued, 'picture')} to a batch (economy: within 24 h)")
        elif queued:
            parts.append(f"queued {plural(queued, 'picture')}")
        run = Run.objects.filter(project=project, state__in=OPEN_RUN_STATES).first()
        waiting = sum(queued_counts(run).values()) if run is not None else 0
        if not parts:
            parts.append("nothing to resume or queue")
        if run is not None and run.state != Run.State.RUNNING:
            parts.append(f"its run is {run.state}")
        elif waiting:
            parts.append(f"{plural(waiting, 'job')} {_verb(waiting, 'wait')} for the workers")
        return f"Project {project.pk} ({project.title}): " + "; ".join(parts) + "."

    def _dry_run(self, projects, before, *, named: bool, media: str) -> None:
        expired = sum(kind.model.objects.expired().count() for kind in KINDS.values())
        self.stdout.write(f"Would reclaim {expired} job(s) from expired leases.")
        for project in projects:
            was = before.get(project.pk)
            parts = []
            if was is not None and was.state in WAITING_STATES:
                waiting = sum(queued_counts(was).values())
                parts.append(
                    f"would set the {_described(was)} running again; "
                    f"{plural(waiting, 'job')} would wait for the workers"
                )
            if named:
                count = 0
                if media in ("illustrations", "all"):
                    count += selectors.missing_pages(project).count()
                if media in ("clips", "all"):
                    count += selectors.missing_clip_pages(project).count()
                if count:
                    parts.append(f"would queue {plural(count, 'picture')}")
            if not parts:
                parts.append("nothing to resume or queue")
            self.stdout.write(f"Project {project.pk} ({project.title}): " + "; ".join(parts) + ".")
        if not projects:
            self.stdout.write("Nothing is halted or paused: nothing to resume.")
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


def run_mode(project: Project) -> str:
    """Return the mode of the project's open run ("now" when it has none)."""
    run = Run.objects.filter(project=project, state__in=OPEN_RUN_STATES).first()
    return run.mode if run is not None else Run.Mode.NOW


def waiting_projects() -> list[Project]:
    """Return the projects whose run is halted or paused, by id."""
    runs = Run.objects.filter(state__in=WAITING_STATES)
    return list(Project.objects.filter(pk__in=runs.values("project_id")).order_by("pk"))


def open_runs(projects: list[Project]) -> list[Run]:
    """Return the open runs of the projects (a project has at most one), in one query."""
    return list(Run.objects.filter(project__in=projects, state__in=OPEN_RUN_STATES))


def _described(run: Run) -> str:
    """Return "halted run (out of credits)", "paused run"."""
    if run.state == Run.State.HALTED and run.halt_reason:
        reason = str(dict(Run.HaltReason.choices).get(run.halt_reason, run.halt_reason))
        return f"halted run ({reason.lower()})"
    return f"{run.state} run"


def _verb(count: int, verb: str) -> str:
    return verb + "s" if count == 1 else verb
