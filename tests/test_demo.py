import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from studio.models import Project

User = get_user_model()


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


@pytest.mark.django_db
def test_a_staff_operator_is_created_once_and_its_password_printed_only_then(capsys):
    call_command("seed_demo")
    first = capsys.readouterr().out
    call_command("seed_demo")
    second = capsys.readouterr().out

    operator = User.objects.get(username="operator")
    assert (operator.is_staff, operator.is_superuser) == (True, True)
    printed = [line for line in first.splitlines() if line.startswith("Staff sign-in")]
    assert len(printed) == 1
    password = printed[0].split("operator / ", 1)[1].split(" ", 1)[0]
    assert operator.check_password(password)
    assert password not in second
    assert "manage.py changepassword operator" in second
    assert User.objects.filter(username="operator").count() == 1


@pytest.mark.django_db
def test_the_operator_opens_the_operations_page_and_the_admin(client, capsys):
    call_command("seed_demo")
    line = next(
        line for line in capsys.readouterr().out.splitlines() if line.startswith("Staff sign-in")
    )
    password = line.split("operator / ", 1)[1].split(" ", 1)[0]
    assert client.login(username="operator", password=password)
    assert client.get("/operations/").status_code == 200
    assert client.get("/admin/generation/illustration/").status_code == 200
