from generation import services
from generation.management.base import OperatorCommand, add_project_arguments, chosen_projects


class Command(OperatorCommand):
    help = "Pause the projects' runs (resume with resume_generation)."

    def add_arguments(self, parser):
        add_project_arguments(parser, allow_all=False)

    def handle(self, *args, **options):
        for project in chosen_projects(options):
            run = services.pause(project=project).run
            state = run.state if run else "nothing running"
            self.stdout.write(f"Project {project.pk} ({project.title}): {state}")
