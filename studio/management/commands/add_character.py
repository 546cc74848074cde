import os
from pathlib import Path

from generation.management.base import OperatorCommand, usage_error
from studio.characters import (
    MAX_REFERENCE_BYTES,
    CharacterError,
    check_reference_image,
    create_character,
)
from studio.forms import PICTURE_LIMITS
from studio.models import Character, Project


class Command(OperatorCommand):
    help = (
        "Add a character (or a setting, a prop, the style reference) to a project, with an "
        f"optional reference picture ({PICTURE_LIMITS[:-1]}). Tags the pages that name it; "
        "prints the new character's id."
    )

    def add_arguments(self, parser):
        parser.add_argument("project", type=int, metavar="PROJECT_ID")
        parser.add_argument("--name", required=True)
        parser.add_argument("--description", default="", help="what must not change")
        parser.add_argument("--aliases", default="", help="other names, comma-separated")
        parser.add_argument("--image", metavar="FILE", help="a reference picture")
        parser.add_argument(
            "--kind", default=Character.Kind.CHARACTER, choices=Character.Kind.values
        )
        parser.add_argument(
            "--every-page",
            action="store_true",
            help="send its picture with every page, also those that do not name it",
        )

    def handle(self, *args, project: int, name: str, image: str | None, **options):
        found = Project.objects.filter(pk=project).first()
        if found is None:
            raise usage_error(f"no project with id {project}")
        checked = None
        if image:
            try:
                with Path(image).open("rb") as stream:
                    size = os.fstat(stream.fileno()).st_size
                    content = stream.read(MAX_REFERENCE_BYTES + 1)
            except OSError as exc:
                raise usage_error(f"{image}: {exc.strerror or exc}") from None
            try:
                checked = check_reference_image(content, size=size)
            except CharacterError as exc:
                raise usage_error(f"{image}: {exc}") from None
        try:
            character = create_character(
                project=found,
                name=name,
                description=options["description"],
                aliases=options["aliases"],
                kind=options["kind"],
                image=checked,
                every_page=options["every_page"],
            )
        except CharacterError as exc:
            raise usage_error(str(exc)) from None
        self.stdout.write(str(character.pk))
