"""Scene clips: one engine for a second media kind, an async-job provider, an offline one."""

import os
import signal
from datetime import timedelta

import pytest
from PIL import Image

from generation import services
from generation.clock import db_now
from generation.models import Clip, GenerationAttempt, ProviderAccount, Run
from tests.conftest import Sweeper, replicate_env, wait_until

pytestmark = pytest.mark.django_db

Status = Clip.Status


@pytest.fixture
def illustrated(make_project, drain):
    """A 3-page project whose pictures the offline renderer drew."""
    project = make_project(pages=3)
    drain(services.generate_missing(project=project).run.pk)
    return project


def clips_of(project):
    return Clip.objects.filter(page__project=project).order_by("page__number")


@pytest.mark.storage
def test_the_offline_renderer_animates_each_picture(illustrated, drain):
    queued = services.generate_missing_clips(project=illustrated)
    assert queued.count == 3
    assert services.generate_missing_clips(project=illustrated).count == 0  # idempotent
    assert drain(queued.run.pk, kind="clip") == 3
    for clip in clips_of(illustrated):
        assert (clip.status, clip.content_type) == ("complete", "image/webp")
        with clip.video.open("rb") as handle, Image.open(handle) as animation:
            assert animation.format == "WEBP" and animation.n_frames == 36
            assert animation.size == (480, 480)
        assert [a.outcome for a in clip.attempts.all()] == ["success"]


def test_a_page_without_a_picture_gets_no_clip(make_project):
    project = make_project(pages=2)
    assert services.generate_missing_clips(project=project).count == 0


def test_success_after_several_polls(
    illustrated, replicate_settings, fake_predictions, drain, clock
):
    fake_predictions.polls_needed = 4
    run = services.generate_missing_clips(project=illustrated).run
    drain(run.pk, kind="clip")
    assert fake_predictions.creates == 3
    assert set(fake_predictions.polls.values()) == {5}  # 4 × processing, then succeeded
    clip = clips_of(illustrated).first()
    assert (clip.status, clip.content_type) == ("complete", "image/webp")
    assert clip.provider_job_id in fake_predictions.predictions
    assert clock.slept[:4] == [0.5, 1.0, 2.0, 4.0]  # backing off between polls


def test_a_failed_prediction_is_retried_with_a_new_one_then_fails_clearly(
    illustrated, replicate_settings, fake_predictions, drain
):
    fake_predictions.outcome = "failed"
    fake_predictions.polls_needed = 1
    clip = services.queue_clip(page=illustrated.pages.first())
    drain(clip.run.pk, kind="clip")
    job = clips_of(illustrated).get()
    assert (job.status, job.failure_reason) == ("failed", "exhausted")
    assert job.error_message == "The clip service's prediction failed: CUDA out of memory"
    assert fake_predictions.creates == 3  # one new prediction per attempt
    assert job.provider_job_id == ""


def test_a_canceled_prediction_fails_the_clip_at_once(
    illustrated, replicate_settings, fake_predictions, drain
):
    fake_predictions.outcome = "canceled"
    queued = services.queue_clip(page=illustrated.pages.first())
    drain(queued.run.pk, kind="clip")
    job = clips_of(illustrated).get()
    assert (job.status, job.failure_reason) == ("failed", "rejected")
    assert "canceled" in job.error_message
    assert fake_predictions.creates == 1


def test_insufficient_credit_halts_the_run(
    illustrated, replicate_settings, fake_predictions, drain
):
    fake_predictions.create_script.extend(["402"] * 5)
    run = services.generate_missing_clips(project=illustrated).run
    drain(run.pk, kind="clip")
    run.refresh_from_db()
    assert (run.state, run.halt_reason) == ("halted", "out_of_credits")
    assert run.message.startswith(
        "The clip service (replicate) says the account is out of credits (HTTP 402)."
    )
    assert fake_predictions.creates == 0
    assert clips_of(illustrated).filter(status=Status.QUEUED).count() == 3


def test_throttled_creates_wait_as_long_as_asked(
    illustrated, replicate_settings, fake_predictions, drain
):
    fake_predictions.create_script.append("429")
    queued = services.queue_clip(page=illustrated.pages.first())
    drain(queued.run.pk, kind="clip")
    # "Your rate limit resets in ~30s.": longer than a worker waits, so the clip goes back
    # to the queue with its next try in 30 s, and the whole account cools down meanwhile.
    clip = clips_of(illustrated).get()
    assert (clip.status, clip.attempts_made) == (Status.QUEUED, 0)
    assert clip.next_attempt_at >= db_now() + timedelta(seconds=29)
    assert ProviderAccount.objects.get().cooldown_until >= db_now() + timedelta(seconds=29)

    ProviderAccount.objects.update(cooldown_until=db_now())  # thirty seconds later
    services.sweep(now=db_now() + timedelta(seconds=31))
    drain(queued.run.pk, kind="clip")
    assert clips_of(illustrated).get().status == Status.COMPLETE
    outcomes = [a.outcome for a in GenerationAttempt.objects.filter(clip__isnull=False)]
    assert outcomes == ["rate_limited", "success"]


def test_regenerate_keeps_the_old_clip_until_the_new_one_is_complete(illustrated, drain):
    run = services.generate_missing_clips(project=illustrated).run
    drain(run.pk, kind="clip")
    page = illustrated.pages.first()
    old = page.clips.get(status=Status.COMPLETE)
    queued = services.queue_clip(page=page, regenerate=True)
    assert page.clips.filter(status=Status.COMPLETE).get() == old
    drain(queued.run.pk, kind="clip")
    old.refresh_from_db()
    assert old.status == Status.REPLACED
    assert page.clips.filter(status=Status.COMPLETE).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_poll_is_followed_by_one_polling_the_same_prediction(
    illustrated, qcluster, fake_predictions
):
    fake_predictions.polls_needed = None  # predictions run until the test says
    env = replicate_env(
        fake_predictions, STUDIO_WORKERS=2, STUDIO_LEASE_SECONDS=3, STUDIO_PROVIDER_TIMEOUT=2
    )
    doomed = qcluster(**env)
    services.generate_missing_clips(project=illustrated)
    wait_until(
        lambda: (
            fake_predictions.creates == 2
            and all(fake_predictions.polls[p] >= 2 for p in fake_predictions.predictions)
        ),
        timeout=60,
    )
    ids = set(fake_predictions.predictions)

    os.killpg(doomed.pid, signal.SIGKILL)  # two workers die while polling
    doomed.wait(timeout=10)
    sweeper = Sweeper(2)
    wait_until(sweeper, timeout=30, interval=0.5)

    qcluster(**env)
    fake_predictions.finish.set()
    wait_until(
        lambda: clips_of(illustrated).filter(status=Status.COMPLETE).count() == 3, timeout=60
    )
    assert fake_predictions.creates == 3  # the third page's, and no second create for any
    assert ids <= set(clips_of(illustrated).values_list("provider_job_id", flat=True))
    assert GenerationAttempt.objects.filter(clip__isnull=False, outcome="lost").count() == 2
    wait_until(
        lambda: Run.objects.filter(project=illustrated, state=Run.State.FINISHED).exists(),
        timeout=10,
    )


# --- the review page, the command and the admin -----------------------------------------


@pytest.mark.storage
def test_the_review_page_offers_missing_clips_and_plays_them(client, editor, illustrated, drain):
    from django.urls import reverse

    client.force_login(editor)
    html = client.get(illustrated.get_absolute_url()).content.decode()
    assert 'Generate Missing Clips <span class="badge">(3)</span>' in html
    response = client.post(
        reverse("project-generate-clips", args=[illustrated.pk]), headers={"HX-Request": "true"}
    )
    assert "Queued 3 clips." in response["HX-Trigger"]
    assert response.content.decode().count('Clip: <span class="chip chip--queued">') == 3
    drain(Run.objects.get(state="running").pk, kind="clip")
    html = client.get(illustrated.get_absolute_url()).content.decode()
    clip = clips_of(illustrated).first()
    assert f'src="{reverse("clip-video", args=[clip.pk])}"' in html
    assert "Clips: 3 of 3" in html and "Generate Missing Clips" not in html
    video = client.get(reverse("clip-video", args=[clip.pk]))
    assert video["Content-Type"] == "image/webp"


def test_another_editor_cannot_see_or_make_clips(client, other_editor, illustrated, drain):
    from django.urls import reverse

    drain(services.generate_missing_clips(project=illustrated).run.pk, kind="clip")
    clip = clips_of(illustrated).first()
    client.force_login(other_editor)
    assert client.get(reverse("clip-video", args=[clip.pk])).status_code == 404
    assert client.post(reverse("project-generate-clips", args=[illustrated.pk])).status_code == 404
    assert client.post(reverse("page-clip", args=[clip.page_id])).status_code == 404


def test_resume_generation_media_clips(illustrated):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command(
        "resume_generation", "--project", str(illustrated.pk), "--media", "clips", stdout=out
    )
    assert clips_of(illustrated).filter(status=Status.QUEUED).count() == 3
    assert out.getvalue().splitlines() == [
        f"Project {illustrated.pk} ({illustrated.title}): queued 3 pictures; 3 jobs wait for "
        "the workers."
    ]


def test_admin_clip_actions(client, django_user_model, illustrated, drain):
    from django.urls import reverse

    staff = django_user_model.objects.create_superuser("op", "op@example.com", "pw-op-12345")
    client.force_login(staff)
    response = client.post(
        reverse("admin:studio_project_changelist"),
        {"action": "generate_missing_clips", "_selected_action": [str(illustrated.pk)]},
        follow=True,
    )
    assert [str(m) for m in response.context["messages"]][-1] == (
        "Queued 3 clips across 1 project."
    )
    drain(Run.objects.get(state="running").pk, kind="clip")
    clip = clips_of(illustrated).first()
    response = client.post(
        reverse("admin:generation_clip_changelist"),
        {"action": "regenerate_selected", "_selected_action": [str(clip.pk)]},
        follow=True,
    )
    assert [str(m) for m in response.context["messages"]][-1] == "Queued 1 clip to make again."


def test_pictures_stay_complete_not_exists_when_a_run_only_makes_clips(
    client, editor, illustrated, drain
):
    drain(services.generate_missing_clips(project=illustrated).run.pk, kind="clip")
    client.force_login(editor)
    html = client.get(illustrated.get_absolute_url()).content.decode()
    assert html.count('class="card card--complete"') == 3
    assert "Exists" not in html
