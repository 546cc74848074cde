import json

from generation.management.base import (
    OperatorCommand,
    add_project_arguments,
    chosen_projects,
    project_status,
    table,
)


class Command(OperatorCommand):
    help = "Show pages, illustrated, missing, failed, active and the run state of projects."

    def add_arguments(self, parser):
        add_project_arguments(parser, allow_all=False)
        parser.add_argument("--json", action="store_true", help="print JSON for machines")

    def handle(self, *args, **options):
        statuses = [project_status(p) for p in chosen_projects(options, default_all=True)]
        if options["json"]:
            self.stdout.write(json.dumps({"projects": statuses}, indent=2))
            return
        rows = [
            {
                **status,
                "state": status["run"]["state"] if status["run"] else "—",
                "reason": (status["run"] or {}).get("halt_reason") or "",
            }
            for status in statuses
        ]
        self.stdout.write(
            table(
                rows,
                [
                    ("id", "ID"),
                    ("title", "Title"),
                    ("pages", "Pages"),
                    ("illustrated", "Illustrated"),
                    ("missing", "Missing"),
                    ("failed", "Failed"),
                    ("active", "Active"),
                    ("state", "Run"),
                    ("reason", "Halt reason"),
                ],
            )
        )
        for status in statuses:
            if status["run"] and status["run"]["state"] == "halted":
                self.stdout.write(f"Project {status['id']}: {status['run']['message']}")
