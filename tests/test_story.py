"""The story phase against the fake chat-completions service, with the engine's retries."""

import pytest

from generation import services
from generation.models import Run, StoryJob
from generation.providers.openai import STORY_INSTRUCTIONS
from studio.models import Page, Project

pytestmark = pytest.mark.django_db


@pytest.fixture
def empty_project(editor):
    return Project.objects.create(owner=editor, title="A Premise", style_guide="Ink and wash.")


def write(project, pages=6):
    return services.write_story(
        project=project, premise="A fox learns to swim", pages=pages, audience="ages 4-6"
    )


def test_a_text_service_writes_the_pages_from_a_premise(
    empty_project, openai_settings, fake_openai, drain
):
    job = write(empty_project)
    assert drain(job.run_id, kind="story") == 1

    job.refresh_from_db()
    assert (job.status, job.pages_written) == ("complete", 6)
    pages = list(empty_project.pages.all())
    assert [p.number for p in pages] == [1, 2, 3, 4, 5, 6]
    assert pages[2].text == "Once, on page 3, the fox walked on."
    assert pages[2].prompt == "A fox, scene 3"
    [call] = fake_openai.calls
    assert call["path"] == "/v1/chat/completions"
    assert call["body"]["model"] == "gpt-4o-mini"
    assert call["body"]["response_format"] == {"type": "json_object"}
    assert call["body"]["messages"][0] == {"role": "system", "content": STORY_INSTRUCTIONS}
    assert call["prompt"] == (
        "Write exactly 6 pages for ages 4-6.\nPremise: A fox learns to swim\n"
        "Keep to this style guide: Ink and wash."
    )
    assert job.prompt_sent == call["prompt"]
    assert [a.outcome for a in job.attempts.all()] == ["success"]
    assert Run.objects.get(pk=job.run_id).state == Run.State.FINISHED


def test_no_credits_halts_the_story_like_any_run(
    empty_project, openai_settings, fake_openai, drain
):
    fake_openai.default = "402"
    job = write(empty_project)
    drain(job.run_id, kind="story")
    run = Run.objects.get(pk=job.run_id)
    assert (run.state, run.halt_reason) == ("halted", "out_of_credits")
    assert run.message.startswith(
        "The text service (openai) says the account is out of credits (HTTP 402)."
    )
    assert StoryJob.objects.get().status == "queued"
    assert Page.objects.count() == 0

    fake_openai.default = "ok"
    services.resume(project=empty_project)
    drain(job.run_id, kind="story")
    assert empty_project.pages.count() == 6


def test_an_answer_that_is_not_json_is_retried_then_fails_clearly(
    empty_project, openai_settings, fake_openai, drain
):
    fake_openai.default = "story_malformed"
    job = write(empty_project)
    waits = []
    drain(job.run_id, kind="story", waits=waits)
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error_message == "The text service wrote something that is not the JSON asked for."
    assert [a.outcome for a in job.attempts.all()] == ["transient"] * 3
    assert len(waits) == 2
    assert Page.objects.count() == 0


def test_fewer_pages_than_asked_is_a_clear_failure(
    empty_project, openai_settings, fake_openai, drain
):
    fake_openai.default = "story_few"
    job = write(empty_project, pages=6)
    drain(job.run_id, kind="story")
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error_message == "The story came back with 4 pages; 6 were asked for."
    assert Page.objects.count() == 0


def test_the_story_phase_is_skipped_when_pages_exist(make_project, openai_settings):
    project = make_project(pages=3)
    with pytest.raises(services.StoryNotPossible, match="already has pages"):
        write(project)
    assert StoryJob.objects.count() == 0


def test_without_a_text_service_the_premise_path_says_so(empty_project, settings):
    settings.STUDIO_TEXT_PROVIDER = ""
    with pytest.raises(services.StoryNotPossible, match="Start from a manuscript instead"):
        write(empty_project)


def test_asking_twice_writes_one_story(empty_project, openai_settings):
    first = write(empty_project)
    assert write(empty_project) == first
    assert StoryJob.objects.count() == 1


def test_story_pages_get_the_limits_and_cleaning_of_typed_pages(
    empty_project, openai_settings, fake_openai, drain
):
    fake_openai.default = "story_hostile"
    job = write(empty_project, pages=4)
    drain(job.run_id, kind="story")
    job.refresh_from_db()
    texts = list(empty_project.pages.values_list("text", flat=True))
    prompts = list(empty_project.pages.values_list("prompt", flat=True))
    # The page of control characters alone is dropped: nothing of it was text.
    assert (job.status, job.pages_written, len(texts)) == ("complete", 3, 3)
    assert len(texts[0]) == 5000
    assert texts[0].startswith("AB") and texts[0].endswith("x…")
    assert prompts[0] == "[31m" + "p" * 3995 + "…"
    assert not any(
        "\x00" in text or "\x1b" in prompt for text, prompt in zip(texts, prompts, strict=True)
    )
    assert texts[1:] == [
        "Once, on page 3, the fox walked on.",
        "Once, on page 4, the fox walked on.",
    ]
