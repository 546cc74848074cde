from pathlib import Path

from django.contrib.auth import get_user_model

from generation.management.base import OperatorCommand, usage_error
from studio.manuscript import ManuscriptError, decode_manuscript, parse_manuscript
from studio.services import TooManyProjects, create_project


class Command(OperatorCommand):
    help = (
        "Create a project from a manuscript: UTF-8 or UTF-16 text (.txt or .md) in which a line "
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
            raise usage_error(f"{file}: a manuscript must be a .txt or .md file")
        if not title.strip():
            raise usage_error("--title must not be empty")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise usage_error(f"{file}: {exc.strerror or exc}") from None
        try:
            pages = parse_manuscript(decode_manuscript(data))
        except ManuscriptError as exc:
            raise usage_error(f"{file}: {exc}") from None
        try:
            project = create_project(owner=self._owner(owner), title=title[:200], pages=pages)
        except TooManyProjects as refusal:
            raise usage_error(str(refusal)) from None
        self.stdout.write(str(project.pk))

    def _owner(self, username: str | None):
        User = get_user_model()
        if username:
            try:
                return User.objects.get(username=username)
            except User.DoesNotExist:
                raise usage_error(f"no user named {username!r}") from None
        users = list(User.objects.all()[:2])
        if len(users) != 1:
            raise usage_error("name the owning editor with --owner USERNAME")
        return users[0]
