"""What the operator commands share: choosing projects, exit codes, tables."""

import logging
from contextlib import contextmanager

from django.core.management.base import BaseCommand, CommandError

from generation import accounts, batches, selectors
from studio.models import Project

# The loggers whose INFO lines a command that moves runs would print among its own: django-q
# says "Enqueued" for every task handed to the broker (33 lines for two books), and the
# studio logs each run's change of state.
NOISY_LOGGERS = ("django-q", "generation")


@contextmanager
def quiet_logs():
    """Hold the noisy loggers to warnings and errors for the duration."""
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class OperatorCommand(BaseCommand):
    """A command whose every usage error is one line and exit code 2, argparse's included.

    A `quiet` command prints its own lines only: the INFO log lines of the work it sets
    going are held back unless it runs with --verbosity 2 (warnings always show)."""

    quiet = False

    def execute(self, *args, **options):
        if not self.quiet or options.get("verbosity", 1) >= 2:
            return super().execute(*args, **options)
        with quiet_logs():
            return super().execute(*args, **options)

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)

        def error(message):
            if parser.called_from_command_line:
                parser.exit(2, f"{parser.prog}: error: {message}\n")
            raise CommandError(f"Error: {message}", returncode=2)

        parser.error = error
        return parser


class RunControlCommand(OperatorCommand):
    """A command that applies one control service to each project named with --project and
    says the state of the run it acted on."""

    quiet = True

    nothing = "nothing to do"  # what it says when a project had no run to act on

    def control(self, project: Project):
        """Return the control service's ControlResult for the project."""
        raise NotImplementedError

    def add_arguments(self, parser):
        add_project_arguments(parser, allow_all=False)

    def handle(self, *args, **options):
        for project in chosen_projects(options):
            run = self.control(project).run
            state = run.state if run else self.nothing
            self.stdout.write(f"Project {project.pk} ({project.title}): {state}")


def usage_error(message: str) -> CommandError:
    """Bad usage: exit code 2 with one line."""
    return CommandError(message, returncode=2)


def add_project_arguments(parser, *, allow_all: bool = True) -> None:
    parser.add_argument(
        "--project",
        type=int,
        action="append",
        default=[],
        metavar="ID",
        help="a project id (repeat for several)",
    )
    if allow_all:
        parser.add_argument("--all", action="store_true", help="every project")


def chosen_projects(options, *, default_all: bool = False) -> list[Project]:
    """Return the projects named by --project (or all, with --all); exit 2 on bad usage."""
    ids = options["project"]
    if ids and options.get("all"):
        raise usage_error("use --project ID or --all, not both")
    if options.get("all") or (default_all and not ids):
        return list(Project.objects.order_by("pk"))
    if not ids:
        raise usage_error("name projects with --project ID (repeatable) or pass --all")
    projects = {p.pk: p for p in Project.objects.filter(pk__in=ids)}
    missing = [str(pk) for pk in ids if pk not in projects]
    if missing:
        raise usage_error(f"no project with id {', '.join(missing)}")
    return [projects[pk] for pk in dict.fromkeys(ids)]


def project_status(project: Project) -> dict:
    """Return the status of a project in the shape of `generation_status --json`."""
    progress = selectors.project_progress(project)
    run = selectors.latest_run(project)
    spend = selectors.spend(project, run)
    return {
        "id": project.pk,
        "title": project.title,
        "pages": progress.pages,
        "illustrated": progress.illustrated,
        "missing": progress.missing,
        # Failed in all, rejected prompts included.
        "failed": progress.failed + progress.rejected,
        # Pages with a job on its way, regenerations of illustrated pages included.
        "active": progress.active,
        "cost": {"project": str(spend.project), "run": str(spend.run)},
        "ledger": selectors.ledger_summary(project.pk),
        "run": None if run is None else run_status(run),
        "account": project_account(project, run),
    }


def run_status(run) -> dict:
    """Return `generation_status --json`'s "run": its state, halt, mode and, for an
    economy run, its latest batch ({"id", "status", "completed", "total"})."""
    status = {
        "state": run.state,
        "halt_reason": run.halt_reason or None,
        "message": run.message,
        "mode": run.mode,
    }
    if run.mode == "economy":
        status["batch"] = batches.status_of(batches.latest(run))
    return status


def project_account(project: Project, run=None) -> dict:
    """Return the state of the provider account the project's pictures are drawn through
    (the one its run recorded: selectors.project_account_key): {"state": "ok" | "cooling" |
    "halted", "reason": …, "until": …} (until: the end of a cool-down, or the next
    automatic probe of an outage)."""
    state = accounts.state_of(selectors.project_account_key(project, run))
    until = state["until"]
    return {
        "state": state["state"],
        "reason": state["reason"] or None,
        "until": until.isoformat() if until else None,
    }


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """Return rows as a plain text table; columns are (key, heading)."""
    cells = [[heading for _, heading in columns]]
    cells += [[str(row[key]) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
