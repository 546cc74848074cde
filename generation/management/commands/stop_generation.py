from generation import services
from generation.management.base import OperatorCommand, add_project_arguments, chosen_projects


class Command(OperatorCommand):
    help = "Stop the projects' runs: calls in flight finish, queued pages are canceled."

    def add_arguments(self, parser):
        add_project_arguments(parser, allow_all=False)

    def handle(self, *args, **options):
        for project in chosen_projects(options):
            run = services.stop(project=project).run
            state = run.state if run else "nothing to stop"
            self.stdout.write(f"Project {project.pk} ({project.title}): {state}")
