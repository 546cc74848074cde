"""Staff rights are Django's permissions (issue 30, item 5): every admin action declares the
permission it needs (change for anything that starts, stops or pays for work), and the
operations page's Resume needs the permission to change provider accounts."""

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.urls import reverse

from generation.models import Illustration, ProviderAccount, Run
from studio.models import Project

pytestmark = pytest.mark.django_db


def staff_with(django_user_model, client, *codenames):
    user = django_user_model.objects.create_user("operator", password="op-pass", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return client


VIEW_ONLY = ("view_project", "view_illustration", "view_provideraccount", "view_clip")


def test_every_admin_action_of_the_studio_declares_the_permission_it_needs():
    undeclared, weak = [], []
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label not in ("studio", "generation"):
            continue
        for name in model_admin.actions or []:
            action = getattr(model_admin, name) if isinstance(name, str) else name
            allowed = getattr(action, "allowed_permissions", ())
            if not allowed:
                undeclared.append(f"{model.__name__}.{name}")
            elif not set(allowed) & {"change", "delete"}:
                weak.append(f"{model.__name__}.{name}")
    assert (undeclared, weak) == ([], [])


@pytest.mark.parametrize("codenames", [VIEW_ONLY, ()], ids=["view only", "no permissions"])
@pytest.mark.parametrize(
    "action", ["generate_missing", "generate_missing_clips", "retry_failed", "resume"]
)
def test_staff_without_change_permission_cannot_start_paid_work_from_the_admin(
    client, django_user_model, make_project, codenames, action
):
    staff = staff_with(django_user_model, client, *codenames)
    project = make_project(pages=2)
    staff.post(
        reverse("admin:studio_project_changelist"),
        {"action": action, "_selected_action": [project.pk]},
    )
    assert Illustration.objects.count() == 0
    assert Run.objects.count() == 0


def test_a_view_only_operator_is_offered_no_action_but_may_look(
    client, django_user_model, make_project
):
    staff = staff_with(django_user_model, client, *VIEW_ONLY)
    make_project(pages=1)
    page = staff.get(reverse("admin:studio_project_changelist"))
    assert page.status_code == 200
    assert 'name="action"' not in page.content.decode()


def test_a_view_only_operator_cannot_stop_a_run(client, django_user_model, make_project):
    staff = staff_with(django_user_model, client, *VIEW_ONLY)
    project = make_project(pages=1)
    run = Run.objects.create(project=project, state=Run.State.RUNNING)
    staff.post(
        reverse("admin:studio_project_changelist"),
        {"action": "stop", "_selected_action": [project.pk]},
    )
    assert Run.objects.get(pk=run.pk).state == Run.State.RUNNING


def test_an_operator_with_change_permission_runs_the_actions(
    client, django_user_model, make_project
):
    staff = staff_with(django_user_model, client, "view_project", "change_project")
    project = make_project(pages=2)
    staff.post(
        reverse("admin:studio_project_changelist"),
        {"action": "generate_missing", "_selected_action": [project.pk]},
    )
    assert Illustration.objects.filter(page__project=project).count() == 2


def halted_account() -> ProviderAccount:
    return ProviderAccount.objects.create(
        key="openai|x|1", provider="openai", state="halted", reason="auth", message="bad key"
    )


@pytest.mark.parametrize("codenames", [VIEW_ONLY, ()], ids=["view only", "no permissions"])
def test_staff_without_change_permission_cannot_resume_an_account(
    client, django_user_model, codenames
):
    staff = staff_with(django_user_model, client, *codenames)
    halted_account()
    response = staff.post(reverse("operations-account-resume"), {"key": "openai|x|1"})
    assert response.status_code == 403
    assert ProviderAccount.objects.get(key="openai|x|1").state == "halted"
    assert "Resume</button>" not in staff.get(reverse("operations")).content.decode()
    staff.post(
        reverse("admin:generation_provideraccount_changelist"),
        {"action": "resume", "_selected_action": ["openai|x|1"]},
    )
    assert ProviderAccount.objects.get(key="openai|x|1").state == "halted"


def test_staff_who_may_change_accounts_resume_one_from_the_operations_page(
    client, django_user_model
):
    staff = staff_with(django_user_model, client, "change_provideraccount")
    halted_account()
    assert "Resume</button>" in staff.get(reverse("operations")).content.decode()
    response = staff.post(reverse("operations-account-resume"), {"key": "openai|x|1"})
    assert response.status_code == 302
    assert ProviderAccount.objects.get(key="openai|x|1").state == "ok"
    assert Project.objects.count() == 0
