import pytest
from django.core.management import call_command

from studio.models import Project


@pytest.mark.django_db
def test_the_demo_book_is_created_once(capsys):
    call_command("seed_demo")
    call_command("seed_demo")
    project = Project.objects.get()
    assert project.title == "The Tale of Peter Rabbit"
    assert project.owner.check_password("picturebook")
    assert list(project.pages.values_list("number", flat=True)) == list(range(1, 25))
    assert project.pages.get(number=5).text.startswith("But Peter, who was very naughty")
    out = capsys.readouterr().out
    assert out.count("Created the demo book") == 1 and out.count("Kept the demo book") == 1
