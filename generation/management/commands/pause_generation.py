from generation import services
from generation.management.base import RunControlCommand


class Command(RunControlCommand):
    help = "Pause the projects' runs (resume with resume_generation)."
    nothing = "nothing running"

    def control(self, project):
        return services.pause(project=project)
