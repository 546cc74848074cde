from generation import services
from generation.management.base import RunControlCommand


class Command(RunControlCommand):
    help = "Stop the projects' runs: calls in flight finish, queued pages are canceled."
    nothing = "nothing to stop"

    def control(self, project):
        return services.stop(project=project)
