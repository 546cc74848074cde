"""Word when a run ends: one email to its owner (Django's locmem backend, the engine worked
in this process), and a signed webhook to a loopback receiver."""

import hashlib
import hmac
import json
import threading
from email import message_from_string
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.urls import reverse

from generation import notify, services
from generation.models import Run
from studio.models import EditorSettings
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db

SECRET = "webhook-secret-for-tests"


@pytest.fixture
def owner(editor):
    editor.email = "alice@example.org"
    editor.save()
    return editor


class Receiver:
    """A loopback webhook receiver: answers the scripted statuses in turn (then 200) and
    keeps every body with its signature header."""

    def __init__(self, statuses=()):
        self.statuses = list(statuses)
        self.received: list[tuple[bytes, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((body, self.headers.get("X-Studio-Signature", "")))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def verified(self) -> list[dict]:
        """Return the bodies whose signature checks out under the shared secret."""
        good = []
        for body, signature in self.received:
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            if hmac.compare_digest(expected, signature):
                good.append(json.loads(body))
        return good

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    receivers = []

    def start(statuses=()):
        receivers.append(Receiver(statuses))
        return receivers[-1]

    yield start
    for one in receivers:
        one.stop()


def test_the_owner_gets_one_email_when_a_run_finishes(owner, make_project, drain, settings):
    settings.STUDIO_BASE_URL = "https://studio.example.org"
    project = make_project(pages=3, title="The Tale of Peter Rabbit")
    run = services.generate_missing(project=project).run

    drain(run.pk)

    assert Run.objects.get(pk=run.pk).state == Run.State.FINISHED
    assert len(mail.outbox) == 1
    email = mail.outbox[0]
    assert email.to == ["alice@example.org"]
    assert email.subject == "Illustration Studio: ✓ 3/3 · The Tale of Peter Rabbit"
    assert "Illustrated: 3 of 3 pages" in email.body
    assert f"https://studio.example.org/projects/{project.pk}/" in email.body


def test_a_halt_emails_the_reason_once_and_a_resumed_run_emails_its_end_again(
    owner, make_project, drain, openai_settings, fake_openai
):
    project = make_project(pages=4, title="Short Book")
    fake_openai.script.extend(["ok", "402"])
    run = services.generate_missing(project=project).run

    drain(run.pk)

    assert Run.objects.get(pk=run.pk).state == Run.State.HALTED
    assert len(mail.outbox) == 1
    assert (
        mail.outbox[0].subject == "Illustration Studio: Halted (out of credits): 1/4 · Short Book"
    )
    assert "Why it halted: " in mail.outbox[0].body
    assert "out of credits" in mail.outbox[0].body
    # Several workers seeing the same end tell nobody twice.
    assert notify.run_ended(run.pk) is False
    assert len(mail.outbox) == 1

    services.resume(project=project)
    drain(run.pk)

    assert Run.objects.get(pk=run.pk).state == Run.State.FINISHED
    assert len(mail.outbox) == 2
    assert mail.outbox[1].subject == "Illustration Studio: ✓ 4/4 · Short Book"


def test_a_run_that_leaves_failed_pages_says_so(
    owner, make_project, drain, openai_settings, fake_openai
):
    project = make_project(pages=3, title="Fox")
    fake_openai.rules.append(("meadow number 2.", "400_policy"))
    run = services.generate_missing(project=project).run

    drain(run.pk)

    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject == "Illustration Studio: ✗ 2/3, 1 missing · Fox"
    assert "Rejected prompts: 1" in mail.outbox[0].body


def test_an_editor_who_switched_the_email_off_gets_none(owner, make_project, drain, client):
    client.force_login(owner)
    # The box unticked (an unticked box sends nothing), the address kept.
    response = client.post(reverse("editor-settings"), {"email": owner.email})
    assert response.status_code == 302
    assert EditorSettings.objects.get(user=owner).email_on_run_end is False
    run = services.generate_missing(project=make_project(pages=2)).run

    drain(run.pk)

    assert Run.objects.get(pk=run.pk).state == Run.State.FINISHED
    assert mail.outbox == []
    assert "Email me when a run ends" in client.get(reverse("editor-settings")).content.decode()


def test_an_editor_sets_their_email_and_the_run_end_email_goes_there(
    editor, make_project, drain, client
):
    client.force_login(editor)
    url = reverse("editor-settings")
    assert 'name="email"' in client.get(url).content.decode()
    response = client.post(url, {"email": "  Alice@Example.ORG ", "email_on_run_end": "on"})
    assert response.status_code == 302
    editor.refresh_from_db()
    assert editor.email == "Alice@example.org"  # the domain's case is not the address's
    assert "Emails go to Alice@example.org." in client.get(url).content.decode()

    drain(services.generate_missing(project=make_project(pages=2)).run.pk)
    assert [message.to for message in mail.outbox] == [["Alice@example.org"]]


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("alice", "Enter a valid email address."),
        ("alice@example.org\nBcc: eve@example.org", "Enter a valid email address."),
        ("a" * 250 + "@example.org", "at most 254 characters"),
    ],
)
def test_a_bad_email_is_a_form_error_and_changes_nothing(owner, client, email, message):
    client.force_login(owner)
    response = client.post(reverse("editor-settings"), {"email": email, "email_on_run_end": ""})
    assert response.status_code == 422
    assert message in response.content.decode()
    owner.refresh_from_db()
    assert owner.email == "alice@example.org"
    assert EditorSettings.of(owner).email_on_run_end is True  # nothing saved


def test_an_editor_may_leave_the_email_empty_and_is_told_none_can_be_sent(owner, client):
    client.force_login(owner)
    response = client.post(reverse("editor-settings"), {"email": "", "email_on_run_end": "on"})
    assert response.status_code == 302
    owner.refresh_from_db()
    assert owner.email == ""
    assert "no email can be sent" in client.get(reverse("editor-settings")).content.decode()


def test_a_stopped_run_sends_no_email(owner, make_project):
    project = make_project(pages=2)
    services.generate_missing(project=project)
    services.stop(project=project)
    assert mail.outbox == []


def test_the_webhook_is_signed_and_retried_until_the_receiver_takes_it(
    owner, make_project, drain, receiver, settings
):
    hook = receiver(statuses=[503, 500])
    settings.STUDIO_WEBHOOK_URL = hook.url
    settings.STUDIO_WEBHOOK_SECRET = SECRET
    project = make_project(pages=2, title="Hooked")
    run = services.generate_missing(project=project).run
    drain(run.pk)
    report = notify.run_report(run.pk)
    waits = []

    assert notify.deliver_webhook(report, sleep=waits.append) is True

    assert len(hook.received) == 3  # two refusals, then accepted
    assert len(waits) == 2 and waits[1] > waits[0]  # backoff grows
    bodies = hook.verified()
    assert len(bodies) == 3
    assert bodies[0]["event"] == "run.ended"
    assert bodies[0]["state"] == "finished"
    assert bodies[0]["counts"] == {
        "pages": 2,
        "illustrated": 2,
        "missing": 0,
        "failed": 0,
        "rejected": 0,
    }
    assert bodies[0]["project"] == {"id": project.pk, "title": "Hooked"}


def test_a_webhook_signed_with_another_secret_does_not_verify(receiver, settings):
    hook = receiver()
    settings.STUDIO_WEBHOOK_URL = hook.url
    settings.STUDIO_WEBHOOK_SECRET = "not-the-shared-secret"
    assert notify.deliver_webhook({"event": "run.ended", "run": 1}, sleep=lambda s: None)
    assert len(hook.received) == 1
    assert hook.verified() == []


@pytest.mark.django_db(transaction=True)
def test_real_workers_email_once_and_deliver_the_signed_webhook_after_a_refusal(
    owner, make_project, qcluster, receiver, tmp_path
):
    # The workers are other processes: Django's locmem outbox cannot reach this one, so
    # they write their emails with the file-based backend, one file per email.
    hook = receiver(statuses=[500])
    qcluster(
        STUDIO_WORKERS=2,
        STUDIO_WEBHOOK_URL=hook.url,
        STUDIO_WEBHOOK_SECRET=SECRET,
        STUDIO_WEBHOOK_BACKOFF=0,
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(tmp_path),
    )
    project = make_project(pages=4, title="Worked Book")
    run = services.generate_missing(project=project).run

    wait_until(lambda: len(hook.received) == 2, timeout=60, message="no webhook retry")

    bodies = hook.verified()
    assert [body["state"] for body in bodies] == ["finished", "finished"]  # 500, then taken
    assert bodies[-1]["run"] == run.pk
    assert bodies[-1]["counts"]["illustrated"] == 4
    emails = wait_until(lambda: list(tmp_path.iterdir()), timeout=30)
    assert len(emails) == 1
    message = message_from_string(emails[0].read_text().rsplit("-" * 79, 1)[0])
    assert message["To"] == "alice@example.org"
    subject = str(make_header(decode_header(message["Subject"])))
    assert subject == "Illustration Studio: ✓ 4/4 · Worked Book"
    assert Run.objects.get(pk=run.pk).end_notice == Run.State.FINISHED


@pytest.mark.django_db(transaction=True)
def test_workers_ending_the_same_run_at_once_send_one_email(owner, make_project):
    from django.db import connection

    project = make_project(pages=1)
    run = Run.objects.create(project=project, state=Run.State.FINISHED)
    start = threading.Barrier(4)
    told = []

    def settle():
        try:
            start.wait()
            told.append(notify.run_ended(run.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=settle) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(told) == [False, False, False, True]
    assert len(mail.outbox) == 1
