"""Character sheets keep the engine's guarantees with real `qcluster` processes: a cluster
killed with SIGKILL in the middle of a sheet's call loses nothing. Its lease runs out, the
sweep puts the sheet back, and a cluster sends the call again with the same idempotency
key. The sheet is asked for exactly twice (the lost call and the one sent again), no other
call is made, each call goes into the ledger once (the lost one at its likely price,
unconfirmed), and the sheet's history shows both attempts.
"""

import json
import os
import signal
from decimal import Decimal

import pytest
from django.urls import reverse

from generation import services
from generation.models import GenerationAttempt, Run, SheetJob, SpendEntry
from studio import characters
from tests.conftest import Sweeper, openai_env, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

PRICES = {"openai:gpt-image-1": "0.04"}


@pytest.fixture
def priced(settings):
    # The sweep runs in this process and enters the lost call at its likely price.
    settings.STUDIO_PRICES = PRICES
    return settings


def env(fake, **overrides) -> dict:
    return openai_env(
        fake,
        STUDIO_WORKERS=1,
        STUDIO_LEASE_SECONDS=3,
        # Longer than any hold here: a held call never times out into a retry of its own.
        STUDIO_PROVIDER_TIMEOUT=20,
        STUDIO_PRICES=json.dumps(PRICES),
        **overrides,
    )


def sheet_calls(fake, name: str) -> list[dict]:
    return [call for call in fake.calls if f"character sheet of {name}:" in call["prompt"]]


def kill(cluster) -> None:
    os.killpg(cluster.pid, signal.SIGKILL)
    cluster.wait(timeout=10)


def assert_drawn_once_after_one_lost_call(character, fake) -> SheetJob:
    """Assert what a sheet whose first call was lost leaves behind; return the job."""
    job = SheetJob.objects.get(character=character)
    assert job.status == SheetJob.Status.COMPLETE
    lost, sent_again = job.attempts.order_by("number")
    assert [(a.number, a.outcome) for a in (lost, sent_again)] == [(1, "lost"), (2, "success")]
    assert lost.charge_unconfirmed and not sent_again.charge_unconfirmed
    # The call was sent again with the lost call's key: a service that honours it charges once.
    calls = sheet_calls(fake, character.name)
    assert [call["idempotency_key"] for call in calls] == [lost.idempotency_key] * 2
    assert lost.idempotency_key
    # One picture kept, chosen (the character had none).
    character.refresh_from_db()
    assert character.versions.count() == 1
    assert character.reference_id == job.reference_id and character.reference.source == "drawn"
    # Each call entered once: the lost one at its likely price, unconfirmed.
    entries = SpendEntry.objects.filter(attempt_id__in=[lost.pk, sent_again.pk]).order_by(
        "attempt_id"
    )
    assert [(e.attempt_id, e.kind, e.confirmed) for e in entries] == [
        (lost.pk, "sheet", False),
        (sent_again.pk, "sheet", True),
    ]
    assert entries[0].amount == Decimal("0.04") and entries[0].basis == "likely"
    return job


def test_a_cluster_killed_during_a_sheet_call_loses_nothing_and_the_call_is_sent_again_once(
    make_project, qcluster, fake_openai, priced, client, editor
):
    project = make_project(pages=2)
    peter = characters.create_character(
        project=project, name="Peter", description="A small brown rabbit in a blue jacket."
    )
    fake_openai.hold()
    doomed = qcluster(**env(fake_openai))
    run_id = services.draw_sheet(character=peter).run.pk
    wait_until(lambda: fake_openai.in_flight == 1, timeout=60)
    job = SheetJob.objects.get()
    assert job.status == SheetJob.Status.GENERATING

    kill(doomed)
    fake_openai.release()  # its answer goes to a dead socket

    sweeper = Sweeper(1)
    wait_until(sweeper, timeout=30, interval=0.5)
    assert sweeper.requeued == 1
    job.refresh_from_db()
    assert (job.status, job.attempts_made) == (SheetJob.Status.QUEUED, 1)
    assert list(job.attempts.values_list("outcome", flat=True)) == ["lost"]

    qcluster(**env(fake_openai))
    wait_until(
        lambda: SheetJob.objects.filter(status=SheetJob.Status.COMPLETE).exists(), timeout=60
    )
    assert_drawn_once_after_one_lost_call(peter, fake_openai)
    assert fake_openai.call_count == 2  # nothing else was asked for
    wait_until(lambda: Run.objects.get(pk=run_id).state == Run.State.FINISHED, timeout=10)

    # The sheet's history on the character's page shows both attempts.
    client.force_login(editor)
    page = client.get(reverse("character-edit", args=[peter.pk])).content.decode()
    assert "Sheet history" in page
    assert page.count('class="outcome--lost"') == 1
    assert page.count('class="outcome--success"') == 1
    assert "Worker lost" in page


def test_the_surviving_cluster_sends_a_killed_clusters_sheet_again_with_the_same_key(
    make_project, qcluster, fake_openai, priced
):
    project = make_project(pages=0)
    flopsy = characters.create_character(
        project=project, name="Flopsy", description="A little rabbit in a red cloak."
    )
    fake_openai.hold()
    clusters = [qcluster(**env(fake_openai)) for _ in range(2)]
    run_id = services.draw_sheet(character=flopsy).run.pk
    wait_until(lambda: fake_openai.in_flight == 1, timeout=60)
    # Kill the cluster whose worker holds the sheet (its worker id carries its pid).
    worker_pid = int(SheetJob.objects.get().claimed_by.split(":")[1])
    (holder,) = [c for c in clusters if os.getpgid(worker_pid) == c.pid]
    (survivor,) = [c for c in clusters if c is not holder]
    kill(holder)
    fake_openai.release()

    # The surviving cluster takes the lost call's job back by itself (it sweeps every beat).
    lost = GenerationAttempt.objects.filter(outcome="lost")
    wait_until(lambda: lost.count() == 1, timeout=30, interval=0.5)
    wait_until(
        lambda: SheetJob.objects.filter(status=SheetJob.Status.COMPLETE).exists(), timeout=60
    )
    assert_drawn_once_after_one_lost_call(flopsy, fake_openai)
    assert survivor.poll() is None  # the one cluster left sent it again
    assert fake_openai.call_count == 2
    assert SpendEntry.objects.count() == 2
    wait_until(lambda: Run.objects.get(pk=run_id).state == Run.State.FINISHED, timeout=10)
