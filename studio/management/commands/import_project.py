from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from generation.management.base import OperatorCommand
from studio.manuscript import ManuscriptError, decode_manuscript, parse_manuscript
from studio.services import TooManyProjects, create_project


def bad_input(message: str) -> CommandError:
    return CommandError(message, returncode=2)


class Command(OperatorCommand):
    help = (
        "Create a project from a manuscript: UTF-8 text (.txt or .md) in which a line "
        "holding only --- separates pages. Prints the new project's id."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="the manuscript (.txt or .md)")
        parser.add_argument("--title", required=True, help="the project's title")
        parser.add_argument(
            "--owner", help="username of the owning editor (optional when only one user exists)"
        )

    def handle(self, *args, file: str, title: str, owner: str | None, **options):
        path = Path(file)
        if path.suffix.lower() not in {".txt", ".md"}:
            raise bad_input(f"{file}: a manuscript must be a .txt or .md file")
        if not title.strip():
            raise bad_input("--title must not be empty")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise bad_input(f"{file}: {exc.strerror or exc}") from None
        try:
            pages = parse_manuscript(decode_manuscript(data))
        except ManuscriptError as exc:
            raise bad_input(f"{file}: {exc}") from None
        try:
            project = create_project(owner=self._owner(owner), title=title[:200], pages=pages)
        except TooManyProjects as refusal:
            raise bad_input(str(refusal)) from None
        self.stdout.write(str(project.pk))

    def _owner(self, username: str | None):
        User = get_user_model()
        if username:
            try:
                return User.objects.get(username=username)
            except User.DoesNotExist:
                raise bad_input(f"no user named {username!r}") from None
        users = list(User.objects.all()[:2])
        if len(users) != 1:
            raise bad_input("name the owning editor with --owner USERNAME")
        return users[0]
