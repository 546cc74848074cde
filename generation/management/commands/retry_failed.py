from generation import services
from generation.management.base import (
    OperatorCommand,
    add_project_arguments,
    chosen_projects,
    table,
)
from studio.text import plural


class Command(OperatorCommand):
    help = "Queue a fresh job, with fresh attempts, for every failed page of the projects."
    quiet = True

    def add_arguments(self, parser):
        add_project_arguments(parser)

    def handle(self, *args, **options):
        rows = []
        for project in chosen_projects(options):
            queued = services.retry_failed(project=project)
            rows.append({"id": project.pk, "title": project.title, "queued": queued.count})
        self.stdout.write(table(rows, [("id", "ID"), ("title", "Title"), ("queued", "Retrying")]))
        total = sum(row["queued"] for row in rows)
        self.stdout.write(f"Retrying {plural(total, 'failed page')}.")
