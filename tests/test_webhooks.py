"""Webhooks for the services that take long (Replicate, fal): a picture being made at the
service holds no worker; every delivery is verified, applied once, and a webhook that never
comes is made up for by polling. Over real HTTP: the fakes POST signed deliveries to the
studio's endpoints (pytest-django's live server), and real qcluster workers do the rest."""

import json
import time

import pytest
import requests
from django.conf import settings as django_settings
from django.db.models.functions import Now
from django_q.signing import SignedPackage

from generation import catalogue, services, webhooks
from generation import tasks as tasks_module
from generation.clock import db_now
from generation.fakes.fal import jwks_of
from generation.fakes.replicate import sign
from generation.kinds import KINDS
from generation.limits import provider_key
from generation.models import (
    GenerationAttempt,
    Illustration,
    ProviderGate,
    Run,
    SpendEntry,
    WebhookDelivery,
)
from generation.providers.base import ImageRequest
from generation.providers.replicate_image import ReplicateImageProvider
from generation.providers.webhooks import WebhookRefused, verify_fal, verify_replicate
from generation.selectors import project_progress
from studio.models import Project
from tests.conftest import FAL_TEST_KEY, wait_until

Status = Illustration.Status

# Standard Webhooks' own example (standardwebhooks.com, the svix libraries' tests): Replicate
# signs this way.
VECTOR = {
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "timestamp": 1614265330,
    "body": b'{"test": 2432232314}',
    "signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}


def vector_headers(**changes) -> dict:
    headers = {
        "webhook-id": VECTOR["id"],
        "webhook-timestamp": str(VECTOR["timestamp"]),
        "webhook-signature": VECTOR["signature"],
    }
    return {**headers, **changes}


# --- verification ---------------------------------------------------------------------


def test_a_replicate_delivery_signed_as_standard_webhooks_documents_is_accepted():
    headers = vector_headers()
    # Several signatures (a secret being rotated): any one that matches will do.
    headers["webhook-signature"] = "v1,bm90IHRoaXMgb25l " + VECTOR["signature"]
    delivery = verify_replicate(
        headers, VECTOR["body"], secret=VECTOR["secret"], now=VECTOR["timestamp"] + 10
    )
    assert delivery == VECTOR["id"]


@pytest.mark.parametrize(
    ("headers", "body", "now", "status", "reason"),
    [
        (vector_headers(), b'{"test": 2432232315}', 0, 401, "forged"),
        (vector_headers(**{"webhook-id": "msg_other"}), VECTOR["body"], 0, 401, "forged"),
        (vector_headers(), VECTOR["body"], 301, 400, "replayed"),
        (vector_headers(), VECTOR["body"], -301, 400, "replayed"),
        ({"webhook-id": VECTOR["id"]}, VECTOR["body"], 0, 401, "unsigned"),
    ],
)
def test_a_replicate_delivery_that_is_forged_stale_or_unsigned_is_refused(
    headers, body, now, status, reason
):
    with pytest.raises(WebhookRefused) as refused:
        verify_replicate(headers, body, secret=VECTOR["secret"], now=VECTOR["timestamp"] + now)
    assert refused.value.status == status
    assert reason in refused.value.reason


def fal_delivery(fake, body: dict) -> tuple[dict, bytes]:
    _, _, raw, headers = fake.signed(body["request_id"], body)
    return headers, raw


def test_a_fal_delivery_is_verified_with_the_configured_jwks_and_nothing_else(fake_fal):
    headers, raw = fal_delivery(fake_fal, {"request_id": "req-1", "status": "OK", "payload": {}})
    assert verify_fal(headers, raw, jwks=fake_fal.jwks) == "req-1"

    other = jwks_of(b"\x01" * 32)  # someone else's key
    with pytest.raises(WebhookRefused, match="forged"):
        verify_fal(headers, raw, jwks=other)
    with pytest.raises(WebhookRefused, match="forged"):
        verify_fal(headers, raw.replace(b"OK", b"KO"), jwks=fake_fal.jwks)
    with pytest.raises(WebhookRefused, match="replayed"):
        verify_fal(headers, raw, jwks=fake_fal.jwks, now=time.time() + 301)
    with pytest.raises(WebhookRefused, match="unsigned"):
        verify_fal({"X-Fal-Webhook-Request-Id": "req-1"}, raw, jwks=fake_fal.jwks)


# --- the endpoint ---------------------------------------------------------------------


def awaiting_job(project, prediction_id: str, broker) -> Illustration:
    """A page whose prediction was created with a webhook: awaiting, its create journalled,
    no task for it in the broker."""
    run = services.generate_missing(project=project).run
    broker.purge_queue()
    job = Illustration.objects.get(page__project=project)
    Illustration.objects.filter(pk=job.pk).update(
        status=Status.AWAITING,
        provider_job_id=prediction_id,
        next_attempt_at=Now(),
        claimed_by="",
    )
    GenerationAttempt.objects.create(
        illustration=job,
        number=1,
        started_at=db_now(),
        idempotency_key="k1",
        provider_job_id=prediction_id,
        outcome=GenerationAttempt.Outcome.INTERRUPTED,
    )
    job.refresh_from_db()
    assert job.run_id == run.pk
    return job


def replicate_delivery(secret: str, body: dict, *, timestamp: int | None = None, webhook_id=""):
    raw = json.dumps(body).encode()
    webhook_id = webhook_id or f"msg_{body['id']}_{body['status']}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    headers = {
        "Content-Type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, raw),
    }
    return headers, raw


@pytest.mark.django_db(transaction=True)
def test_forged_replayed_and_repeated_deliveries_change_nothing(
    live_server, settings, make_project, broker
):
    settings.REPLICATE_WEBHOOK_SECRET = VECTOR["secret"]
    url = f"{live_server.url}/webhooks/replicate/"
    job = awaiting_job(make_project(pages=1), "p-123", broker)
    ended = {"id": "p-123", "status": "succeeded", "output": ["https://x/1.png"]}

    def post(headers, raw):
        return requests.post(url, data=raw, headers=headers, timeout=10)

    def unchanged():
        job_now = Illustration.objects.get(pk=job.pk)
        return (
            job_now.status == Status.AWAITING
            and not WebhookDelivery.objects.exists()
            and broker.queue_size() == 0
        )

    headers, raw = replicate_delivery(VECTOR["secret"], ended)
    forged = post(headers, raw.replace(b"succeeded", b"failed"))
    assert (forged.status_code, "forged" in forged.text) == (401, True)
    wrong_key = replicate_delivery("whsec_" + "A" * 32, ended)
    assert post(*wrong_key).status_code == 401
    stale = replicate_delivery(VECTOR["secret"], ended, timestamp=int(time.time()) - 600)
    replayed = post(*stale)
    assert (replayed.status_code, "replayed" in replayed.text) == (400, True)
    unknown = post(*replicate_delivery(VECTOR["secret"], {**ended, "id": "p-999"}))
    assert (unknown.status_code, "unknown job" in unknown.text) == (404, True)
    assert requests.get(url, timeout=10).status_code == 405
    assert unchanged()

    first = post(headers, raw)
    again = post(headers, raw)  # the service did not hear the first answer: it repeats

    assert (first.status_code, first.text.strip()) == (200, "woken")
    assert (again.status_code, "already received" in again.text) == (200, True)
    job.refresh_from_db()
    assert (job.status, job.next_attempt_at) == (Status.QUEUED, None)
    assert WebhookDelivery.objects.get().outcome == "woken"
    assert broker.queue_size() >= 1  # a worker is handed the job


@pytest.mark.django_db(transaction=True)
def test_a_webhook_that_comes_before_its_worker_lets_go_still_wakes_the_job(
    settings, make_project, broker
):
    settings.REPLICATE_WEBHOOK_SECRET = VECTOR["secret"]
    job = awaiting_job(make_project(pages=1), "p-fast", broker)
    Illustration.objects.filter(pk=job.pk).update(status=Status.GENERATING, claimed_by="w-1")
    headers, raw = replicate_delivery(VECTOR["secret"], {"id": "p-fast", "status": "succeeded"})

    answer = webhooks.receive("replicate", headers, raw)
    assert answer.reason == "recorded: its worker wakes it"
    rows = Illustration.objects.filter(pk=job.pk)
    assert rows.await_service(worker_id="w-1", overdue=300) == 1
    assert webhooks.wake_if_delivered(KINDS["illustration"], job) is True

    assert (rows.get().status, rows.get().next_attempt_at) == (Status.QUEUED, None)
    assert webhooks.wake_if_delivered(KINDS["illustration"], job) is False  # once


@pytest.mark.django_db(transaction=True)
def test_a_webhook_that_comes_before_its_worker_has_read_the_create_still_wakes_the_job(
    settings, make_project, broker
):
    # A fast prediction: it ended, and its delivery came, while the worker that created it
    # was still reading the create's answer (no id stored anywhere yet).
    settings.REPLICATE_WEBHOOK_SECRET = VECTOR["secret"]
    services.generate_missing(project=make_project(pages=1))
    broker.purge_queue()
    job = Illustration.objects.get()
    rows = Illustration.objects.filter(pk=job.pk)
    rows.update(status=Status.GENERATING, claimed_by="w-1")
    call = GenerationAttempt.objects.create(
        illustration=job, number=1, started_at=db_now(), idempotency_key="k1"
    )
    headers, raw = replicate_delivery(VECTOR["secret"], {"id": "p-faster", "status": "succeeded"})

    answer = webhooks.receive("replicate", headers, raw)

    assert (answer.status, answer.reason) == (
        200,
        "recorded: the call that made it is still reading its answer",
    )
    assert rows.get().status == Status.GENERATING  # nothing moved: its worker holds it
    # The worker reads the answer: the id is stored, and the job waits for its webhook.
    GenerationAttempt.objects.filter(pk=call.pk).update(provider_job_id="p-faster")
    rows.update(provider_job_id="p-faster")
    job.refresh_from_db()
    assert rows.await_service(worker_id="w-1", overdue=300) == 1
    assert webhooks.wake_if_delivered(KINDS["illustration"], job) is True
    assert (rows.get().status, rows.get().next_attempt_at) == (Status.QUEUED, None)


@pytest.mark.django_db(transaction=True)
def test_stop_cancels_a_job_waiting_at_the_service_there_too(
    replicate_image_settings, fake_predictions, make_project, broker
):
    fake_predictions.polls_needed = None  # it would run until canceled
    provider = ReplicateImageProvider()
    prediction = provider.create(
        ImageRequest(prompt="a fox", size="256x256", seed=1, idempotency_key="k")
    )
    project = make_project(pages=1)
    job = awaiting_job(project, prediction, broker)
    Project.objects.filter(pk=project.pk).update(image_service="replicate")

    services.stop(project=project)

    job.refresh_from_db()
    assert job.status == Status.CANCELED
    assert Run.objects.get(pk=job.run_id).state == Run.State.STOPPED
    tasks = [SignedPackage.loads(package) for _, package in broker.dequeue()]
    assert [(task["func"], task["args"]) for task in tasks] == [
        ("generation.tasks.cancel_at_service", ([("illustration", job.pk, prediction)],))
    ]
    tasks_module.cancel_at_service(*tasks[0]["args"])  # what the worker runs
    assert fake_predictions.canceled == [prediction]


# --- with workers ---------------------------------------------------------------------


def replicate_webhook_env(fake, live_server, **overrides) -> dict:
    return {
        "STUDIO_IMAGE_PROVIDER": "replicate",
        "REPLICATE_BASE_URL": fake.url,
        "REPLICATE_API_TOKEN": "r8_test_token",
        "STUDIO_PROVIDER_TIMEOUT": "30",
        "STUDIO_PUBLIC_URL": live_server.url,
        "REPLICATE_WEBHOOK_SECRET": fake.webhook_secret,
        **overrides,
    }


def use_replicate(settings, fake, live_server):
    settings.STUDIO_IMAGE_PROVIDER = "replicate"
    settings.REPLICATE_BASE_URL = fake.url
    settings.REPLICATE_API_TOKEN = "r8_test_token"
    settings.STUDIO_PUBLIC_URL = live_server.url
    settings.REPLICATE_WEBHOOK_SECRET = fake.webhook_secret


def charged_once(project, count: int) -> None:
    entries = SpendEntry.objects.filter(project_id=project.pk)
    assert entries.count() == count
    assert all(entry.confirmed for entry in entries)
    # Each at its model's list price in the catalogue (the service's default model).
    for entry in entries:
        listed = catalogue.model(entry.provider, entry.model)
        assert entry.model == catalogue.default(entry.provider)
        assert entry.amount == listed.price(django_settings.STUDIO_IMAGE_SIZE) > 0


# The 20 s predictions, scaled down to keep CI fast: what is shown is an order (all
# eight created before the first ends), not a time, so the scale changes nothing.
PREDICTION_SECONDS = 6


@pytest.mark.django_db(transaction=True)
def test_two_workers_start_all_eight_predictions_at_once_and_each_is_fetched_once(
    live_server, settings, make_project, qcluster, fake_predictions
):
    fake = fake_predictions
    fake.latency = PREDICTION_SECONDS
    fake.webhook_repeats = 2  # every delivery comes twice
    fake.webhook_out_of_order = True  # in pairs, newest first, and a stale one after
    use_replicate(settings, fake, live_server)
    # Two calls at a time at the service's model, for every worker: a prediction waiting
    # for its webhook holds no slot either.
    settings.STUDIO_PROVIDER_MAX_CONCURRENT = 2
    project = make_project(pages=8)
    qcluster(
        **replicate_webhook_env(
            fake, live_server, STUDIO_WORKERS=2, STUDIO_PROVIDER_MAX_CONCURRENT="2"
        )
    )

    services.generate_missing(project=project)
    wait_until(lambda: project_progress(project).complete, timeout=60)
    finished = time.monotonic()  # the fake runs in this process: its clock is this one
    # The stale deliveries come after the final ones: the book can be complete while the
    # last are still on their way (8 predictions × 2 deliveries × 2 sendings).
    wait_until(lambda: len(fake.delivered()) == 32, timeout=30)

    predictions = list(fake.predictions.values())
    assert len(predictions) == 8  # one each: nothing was created twice
    # With polling, two workers would create two, wait for them, then two more.
    assert max(p["created"] for p in predictions) < min(p["ended"] for p in predictions)
    # And the book is done in about one prediction's time from the first create (polling,
    # two at a time, would take four): the one prediction's time, plus less than one more
    # for the deliveries and the fetches.
    assert finished - min(p["created"] for p in predictions) < 2 * PREDICTION_SECONDS
    assert all(request["webhook"] for request in fake.webhook_requests)
    assert {tuple(r["filter"]) for r in fake.webhook_requests} == {("completed",)}
    assert all(prefer == "" for prefer in fake.prefer)  # nobody holds a create open
    assert all(count == 1 for count in fake.polls.values())  # one look, once it ended
    assert len(fake.polls) == 8
    applied = WebhookDelivery.objects.filter(outcome="woken")
    assert applied.count() == 8
    assert WebhookDelivery.objects.filter(ended=False).count() == 8  # the stale ones
    repeats = [d for d in fake.delivered() if "already received" in d["reason"]]
    assert len(repeats) == 16  # each delivery's second sending, applied once
    charged_once(project, 8)
    # The limit was in force: the workers counted their calls at its gate.
    limit = provider_key("replicate", catalogue.default("replicate"))
    assert ProviderGate.objects.filter(key=limit).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("webhook", ["lost", "late"])
def test_a_lost_or_late_webhook_is_made_up_for_by_polling(
    live_server, settings, make_project, qcluster, fake_predictions, webhook
):
    fake = fake_predictions
    fake.latency = 1
    if webhook == "lost":
        fake.webhook_lost = True
    else:
        fake.webhook_delay = 8  # long after the job is overdue (2 s) and polled
    use_replicate(settings, fake, live_server)
    project = make_project(pages=2)
    qcluster(
        **replicate_webhook_env(
            fake,
            live_server,
            STUDIO_WORKERS=2,
            STUDIO_WEBHOOK_OVERDUE=2,
            STUDIO_HEARTBEAT_SECONDS=1,
        )
    )

    services.generate_missing(project=project)
    wait_until(lambda: project_progress(project).complete, timeout=60)

    assert not WebhookDelivery.objects.exists()  # nothing came in time
    assert len(fake.predictions) == 2
    assert sum(fake.polls.values()) >= 2  # the sweep woke them, a worker polled
    if webhook == "late":
        wait_until(lambda: len(fake.delivered()) == 2, timeout=30)
        assert {d["reason"] for d in fake.delivered()} == {
            "nothing waits for it (the job is complete)"
        }
    else:
        assert fake.delivered() == []
    charged_once(project, 2)


@pytest.mark.django_db(transaction=True)
def test_a_delivery_that_outruns_the_creates_answer_still_brings_the_picture_at_once(
    live_server, settings, make_project, qcluster, fake_predictions
):
    # Each prediction ends, and the fake has its delivery answered, before the create's
    # answer leaves: the studio hears of a job whose id no worker has stored yet. The
    # webhook is not overdue for 300 s: the book must not wait for the sweep.
    fake = fake_predictions
    fake.latency = 0
    fake.webhook_before_answer = True
    use_replicate(settings, fake, live_server)
    project = make_project(pages=2)
    qcluster(**replicate_webhook_env(fake, live_server, STUDIO_WORKERS=2))

    services.generate_missing(project=project)
    wait_until(lambda: project_progress(project).complete, timeout=30)

    assert {d["reason"] for d in fake.delivered()} == {
        "recorded: the call that made it is still reading its answer"
    }
    assert sum(fake.polls.values()) == 2  # one look each, once woken: not the sweep's
    charged_once(project, 2)


@pytest.mark.django_db(transaction=True)
def test_a_fal_request_comes_back_through_its_signed_webhook(
    live_server, settings, make_project, qcluster, fake_fal
):
    fake_fal.latency = 1
    fake_fal.webhook_repeats = 2  # fal retries a delivery it thinks was lost: applied once
    settings.STUDIO_IMAGE_PROVIDER = "fal"
    settings.FAL_QUEUE_URL = fake_fal.origin
    settings.FAL_KEY = FAL_TEST_KEY
    settings.STUDIO_PUBLIC_URL = live_server.url
    settings.FAL_WEBHOOK_JWKS = fake_fal.jwks
    project = make_project(pages=2)
    qcluster(
        STUDIO_IMAGE_PROVIDER="fal",
        FAL_QUEUE_URL=fake_fal.origin,
        FAL_KEY=FAL_TEST_KEY,
        STUDIO_PROVIDER_TIMEOUT="30",
        STUDIO_PUBLIC_URL=live_server.url,
        FAL_WEBHOOK_JWKS=fake_fal.jwks,
        STUDIO_WORKERS=2,
    )

    services.generate_missing(project=project)
    wait_until(lambda: project_progress(project).complete, timeout=60)

    assert fake_fal.webhook_urls == [f"{live_server.url}/webhooks/fal/"] * 2
    wait_until(lambda: len(fake_fal.delivered()) == 4, timeout=30)
    assert [d["answer"] for d in fake_fal.delivered()] == [200] * 4
    repeats = [d for d in fake_fal.delivered() if "already received" in d["reason"]]
    assert len(repeats) == 2  # each request's second sending
    assert WebhookDelivery.objects.filter(service="fal", outcome="woken").count() == 2
    assert all(count == 1 for count in fake_fal.polls.values())  # one look each
    charged_once(project, 2)
