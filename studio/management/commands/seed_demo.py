import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from generation.providers import get_provider
from generation.providers.base import ImageRequest
from generation.references import sheet_prompt
from studio.characters import CheckedImage, add_reference, create_character
from studio.manuscript import parse_manuscript
from studio.models import Character, Project
from studio.services import create_project

DEMO_USERNAME = "editor"
DEMO_PASSWORD = "picturebook"
# The admin and the operations page need a staff account: made once beside the editor,
# with a fresh password that is printed only then (no known password on any checkout).
OPERATOR_USERNAME = "operator"
DEMO_TITLE = "The Tale of Peter Rabbit"
DEMO_STYLE = (
    "Soft watercolour picture-book illustration, gentle English countryside, muted greens "
    "and browns. Peter is a small brown rabbit in a blue jacket with brass buttons."
)
STORY = Path(__file__).resolve().parents[2] / "demo" / "peter_rabbit.md"
# The demo's characters; their sheets are drawn offline, at seed time, by the embedded
# renderer (no worker, no network): the same request a "Draw character sheet" job sends.
DEMO_CHARACTERS = [
    (
        "Peter",
        "A small brown rabbit with a white tail, in a blue jacket with brass buttons; no "
        "shoes, no hat.",
        "",
    ),
    (
        "Mrs. Rabbit",
        "Peter's mother: a grey rabbit, taller than her children, in a long red dress and a "
        "white apron; carries a basket and an umbrella.",
        "his mother, old Mrs. Rabbit",
    ),
    (
        "Mr. McGregor",
        "An old gardener: a tall man with a tan face and a white beard, in a brown "
        "waistcoat, blue shirt and boots; holds a rake.",
        "McGregor",
    ),
]


class Command(BaseCommand):
    help = (
        "Create, once, a demo editor, a 24-page demo picture book and a staff account "
        "(operator) for the admin and the operations page."
    )

    @transaction.atomic
    def handle(self, *args, **options):
        User = get_user_model()
        editor, created = User.objects.get_or_create(username=DEMO_USERNAME)
        if created:
            editor.set_password(DEMO_PASSWORD)
            editor.save()
        project = Project.objects.filter(owner=editor, title=DEMO_TITLE).first()
        created = project is None
        if created:
            pages = parse_manuscript(STORY.read_text(encoding="utf-8"))
            project = create_project(
                owner=editor, title=DEMO_TITLE, style_guide=DEMO_STYLE, pages=pages
            )
            add_demo_characters(project)
        verb = "Created" if created else "Kept"
        self.stdout.write(
            f"{verb} the demo book '{project.title}' ({project.pages.count()} pages)."
        )
        self.stdout.write(f"Sign in as {DEMO_USERNAME} / {DEMO_PASSWORD}")
        password = create_operator()
        if password:
            self.stdout.write(
                f"Staff sign-in for /admin/ and /operations/: {OPERATOR_USERNAME} / "
                f"{password} (printed this once)"
            )
        else:
            self.stdout.write(
                f"Staff sign-in for /admin/ and /operations/: {OPERATOR_USERNAME} (its "
                f"password was printed when it was made; `.venv/bin/python manage.py "
                f"changepassword {OPERATOR_USERNAME}` sets a new one)"
            )


def create_operator() -> str:
    """Create the staff account once; return its new password, or "" when it existed."""
    User = get_user_model()
    operator, created = User.objects.get_or_create(
        username=OPERATOR_USERNAME, defaults={"is_staff": True, "is_superuser": True}
    )
    if not created:
        return ""
    password = secrets.token_urlsafe(12)
    operator.set_password(password)
    operator.save()
    return password


def add_demo_characters(project: Project) -> list[Character]:
    """Add Peter, his mother and Mr. McGregor, each with a character sheet drawn offline,
    tagged on the pages that name them."""
    renderer = get_provider("embedded")
    added = []
    for name, description, aliases in DEMO_CHARACTERS:
        character = create_character(
            project=project, name=name, description=description, aliases=aliases
        )
        sheet = renderer.generate(
            ImageRequest(
                prompt=sheet_prompt(character),
                size=settings.STUDIO_IMAGE_SIZE,
                seed=character.pk,
                idempotency_key=f"demo-sheet-{character.pk}",
                caption=name,
                subject="sheet",
            )
        )
        add_reference(
            character=character,
            image=CheckedImage(sheet.content, "image/png", sheet.width, sheet.height),
            drawn=True,
        )
        added.append(character)
    return added
