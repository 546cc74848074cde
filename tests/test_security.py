"""Security: CSRF, headers and CSP, hostile inputs, secrets, deploy checks, sign-in throttling.

The URL × {anonymous, another editor, owner} matrix lives in test_views.py.
"""

import io
import logging
import os
import re
import subprocess
import sys

import pytest
from django.test import Client
from django.urls import reverse

from generation import services
from generation.models import GenerationAttempt, Illustration
from studio.models import Project
from tests.conftest import ROOT, TEST_API_KEY

pytestmark = pytest.mark.django_db


@pytest.fixture
def csrf_client(editor):
    client = Client(enforce_csrf_checks=True)
    client.force_login(editor)
    return client


def csrf_token(client, url) -> str:
    html = client.get(url).content.decode()
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


def state_changing_urls(project, page):
    return [
        reverse("project-generate", args=[project.pk]),
        reverse("project-retry-failed", args=[project.pk]),
        reverse("project-stop", args=[project.pk]),
        reverse("project-pause", args=[project.pk]),
        reverse("project-resume", args=[project.pk]),
        reverse("page-retry", args=[page.pk]),
        reverse("page-regenerate", args=[page.pk]),
        reverse("page-next", args=[page.pk]),
        reverse("page-prompt", args=[page.pk]),
        reverse("page-edit", args=[page.pk]),
        reverse("page-move", args=[page.pk]),
        reverse("page-add", args=[project.pk]),
        reverse("project-settings", args=[project.pk]),
        reverse("project-create"),
        reverse("page-delete", args=[page.pk]),
        reverse("project-delete", args=[project.pk]),
    ]


def test_every_state_change_needs_the_csrf_token_htmx_posts_included(csrf_client, make_project):
    project = make_project(pages=2)
    page = project.pages.first()
    for url in state_changing_urls(project, page):
        assert csrf_client.post(url).status_code == 403, url
        assert csrf_client.post(url, headers={"HX-Request": "true"}).status_code == 403, url
    assert Project.objects.count() == 1 and Illustration.objects.count() == 0
    assert project.pages.count() == 2


def test_an_htmx_post_with_the_token_header_works(csrf_client, make_project):
    project = make_project(pages=2)
    token = csrf_token(csrf_client, project.get_absolute_url())
    response = csrf_client.post(
        reverse("project-generate", args=[project.pk]),
        headers={"HX-Request": "true", "X-CSRFToken": token},
    )
    assert response.status_code == 200
    assert Illustration.objects.count() == 2


def test_the_page_carries_the_csrf_header_for_htmx(client, editor, make_project):
    client.force_login(editor)
    html = client.get(make_project(pages=1).get_absolute_url()).content.decode()
    assert re.search(r"<body hx-headers='\{\"X-CSRFToken\": \"[^\"]+\"\}'>", html)


def test_security_headers_and_a_strict_content_security_policy(client, editor, make_project):
    client.force_login(editor)
    response = client.get(make_project(pages=1).get_absolute_url())
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    csp = dict(
        part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";")
    )
    assert csp["default-src"] == "'self'"
    assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'"
    assert "unsafe" not in response["Content-Security-Policy"]


def test_no_page_has_inline_scripts_or_styles(client, editor, make_project, drain):
    client.force_login(editor)
    project = make_project(pages=2)
    drain(services.generate_missing(project=project).run.pk)
    page = project.pages.first()
    urls = [
        reverse("project-list"),
        project.get_absolute_url(),
        reverse("project-create"),
        reverse("project-create-premise"),
        reverse("project-generating", args=[project.pk]),
        reverse("project-pages", args=[project.pk]),
        reverse("page-edit", args=[page.pk]),
        reverse("page-history", args=[page.pk]),
        reverse("project-settings", args=[project.pk]),
    ]
    for url in urls:
        html = client.get(url).content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), url
        assert not re.search(r"<style\b|\sstyle=", html), url
        assert not re.search(r"\son[a-z]+=", html), url
    client.logout()
    login = client.get(reverse("login")).content.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=", login)


# --- hostile inputs -----------------------------------------------------------------------


def test_a_path_traversal_file_name_is_only_a_name(client, editor, settings, tmp_path):
    client.force_login(editor)
    settings.MEDIA_ROOT = tmp_path
    upload = io.BytesIO(b"One.\n---\nTwo.")
    upload.name = "../../../../etc/evil.md"
    response = client.post(reverse("project-create"), {"title": "Odd", "upload": upload})
    assert response.status_code == 302
    assert Project.objects.get().pages.count() == 2
    assert list(tmp_path.rglob("*")) == []  # nothing written anywhere


def test_a_huge_form_body_is_refused(client, editor):
    client.force_login(editor)
    response = client.post(
        reverse("project-create"), {"title": "Big", "manuscript": "x" * (4 * 1024 * 1024)}
    )
    assert response.status_code == 400
    assert Project.objects.count() == 0


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("bomb", "refused a decompression bomb"),
        ("bomb_9000", "image too large (9000x9000)"),
        ("huge", "sent more than 32 MB; refused"),
    ],
)
def test_hostile_provider_answers_are_refused_and_nothing_is_saved(
    make_project, openai_settings, fake_openai, drain, settings, tmp_path, reply, message
):
    settings.MEDIA_ROOT = tmp_path
    fake_openai.default = reply
    project = make_project(pages=1)
    drain(services.generate_missing(project=project).run.pk)
    job = Illustration.objects.get()
    assert (job.status, job.failure_reason) == ("failed", "exhausted")
    assert message in job.error_message
    assert not job.image
    assert list(tmp_path.rglob("*")) == []


def test_the_api_key_is_never_shown_stored_or_logged(
    client, editor, make_project, openai_settings, fake_openai, drain, caplog
):
    caplog.set_level(logging.DEBUG)
    fake_openai.default = "401_echo_key"
    project = make_project(pages=3)
    drain(services.generate_missing(project=project).run.pk)
    attempt = GenerationAttempt.objects.get()
    assert attempt.message == "Incorrect API key provided: [redacted]."
    assert TEST_API_KEY not in project.runs.get().message

    client.force_login(editor)
    page = project.pages.first()
    pages = [
        project.get_absolute_url(),
        reverse("page-history", args=[page.pk]),
        reverse("project-generating", args=[project.pk]),
        reverse("project-list"),
    ]
    for url in pages:
        assert TEST_API_KEY not in client.get(url).content.decode(), url
    assert TEST_API_KEY not in caplog.text
    assert "Incorrect API key provided: [redacted]." in caplog.text  # the halt was logged


# --- production settings ---------------------------------------------------------------------


def production_env(**extra) -> dict:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DJANGO_SETTINGS_MODULE": "studio.settings",
        "STUDIO_ENV_FILE": "",  # production has no .env; a developer's must not count here
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "k" * 20 + "-production-secret-key-of-good-length-0123456789",
        "DJANGO_ALLOWED_HOSTS": "studio.example.com",
        "STUDIO_HTTPS": "true",
        **extra,
    }


def test_check_deploy_is_clean_under_production_settings():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=production_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key():
    env = production_env()
    del env["DJANGO_SECRET_KEY"]
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "Set DJANGO_SECRET_KEY (or DJANGO_DEBUG=true for local development)." in result.stderr


# --- sign-in throttling -----------------------------------------------------------------------


def test_sign_in_is_locked_after_five_failures(client, editor, settings):
    settings.AXES_ENABLED = True
    url = reverse("login")
    for _ in range(4):
        response = client.post(url, {"username": "alice", "password": "wrong"})
        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.content.decode()
    locked = client.post(url, {"username": "alice", "password": "wrong"})
    assert locked.status_code == 429
    assert "Too many sign-in attempts" in locked.content.decode()
    # Even the right password is refused while locked.
    right = client.post(url, {"username": "alice", "password": "alice-password"})
    assert right.status_code == 429
    assert "_auth_user_id" not in client.session


def test_one_password_across_many_usernames_locks_the_address(client, editor, settings):
    settings.AXES_ENABLED = True
    url = reverse("login")
    for name in ["bob", "carol", "dave", "erin"]:
        assert client.post(url, {"username": name, "password": "Summer2024!"}).status_code == 200
    # A success in between (an attacker's own account) does not wipe the address's count.
    assert client.post(url, {"username": "alice", "password": "alice-password"}).status_code == 302
    client.logout()
    assert client.post(url, {"username": "frank", "password": "Summer2024!"}).status_code == 429
    right = client.post(url, {"username": "alice", "password": "alice-password"})
    assert right.status_code == 429
    # Another address is not locked.
    elsewhere = client.post(
        url, {"username": "alice", "password": "alice-password"}, REMOTE_ADDR="198.51.100.7"
    )
    assert elsewhere.status_code == 302


def fail_behind_proxy(client, forwarded_for: str):
    return client.post(
        reverse("login"),
        {"username": "alice", "password": "wrong"},
        REMOTE_ADDR="10.0.0.2",  # the proxy
        HTTP_X_FORWARDED_FOR=forwarded_for,
    )


def test_behind_the_proxy_each_client_is_counted_by_its_own_address(client, editor, settings):
    settings.AXES_ENABLED = True
    settings.STUDIO_BEHIND_PROXY = True
    for forged in ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"]:
        # The client forges the left of the header; the proxy appends what it saw.
        assert fail_behind_proxy(client, f"{forged}, 203.0.113.5").status_code == 200
    assert fail_behind_proxy(client, "5.5.5.5, 203.0.113.5").status_code == 429
    # Another client through the same proxy is not locked out with the first.
    assert fail_behind_proxy(client, "203.0.113.9").status_code == 200


def test_without_the_proxy_setting_forwarded_addresses_are_ignored(client, editor, settings):
    settings.AXES_ENABLED = True
    for n in range(4):
        assert fail_behind_proxy(client, f"203.0.113.{n}").status_code == 200
    assert fail_behind_proxy(client, "203.0.113.99").status_code == 429


def test_sendfile_hands_the_checked_file_to_the_web_server(
    client, editor, make_project, drain, settings
):
    client.force_login(editor)
    project = make_project(pages=1)
    drain(services.generate_missing(project=project).run.pk)
    job = Illustration.objects.get()
    settings.STUDIO_SENDFILE_HEADER = "X-Accel-Redirect"
    response = client.get(reverse("illustration-image", args=[job.pk]))
    assert response.status_code == 200
    assert response["X-Accel-Redirect"] == f"/protected-media/{job.image.name}"
    assert response.content == b""
    settings.STUDIO_SENDFILE_HEADER = "X-Sendfile"
    response = client.get(reverse("illustration-image", args=[job.pk]))
    assert response["X-Sendfile"] == job.image.path
