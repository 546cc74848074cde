from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from studio.manuscript import parse_manuscript
from studio.models import Project
from studio.services import create_project

DEMO_USERNAME = "editor"
DEMO_PASSWORD = "picturebook"
DEMO_TITLE = "The Tale of Peter Rabbit"
DEMO_STYLE = (
    "Soft watercolour picture-book illustration, gentle English countryside, muted greens "
    "and browns. Peter is a small brown rabbit in a blue jacket with brass buttons."
)
STORY = Path(__file__).resolve().parents[2] / "demo" / "peter_rabbit.md"


class Command(BaseCommand):
    help = "Create, once, a demo editor and a 24-page demo picture book."

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
        verb = "Created" if created else "Kept"
        self.stdout.write(
            f"{verb} the demo book '{project.title}' ({project.pages.count()} pages)."
        )
        self.stdout.write(f"Sign in as {DEMO_USERNAME} / {DEMO_PASSWORD}")
