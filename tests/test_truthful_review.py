"""The review page never misleads: plain words, rejected pages apart from "Retry failed",
Generate Missing that never resumes a halted run, and pictures out of date counted and
regenerated."""

import re
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from generation import ledger, runs, selectors, services
from generation.models import Illustration, Run
from generation.plain import plain_message
from generation.pricing import money
from studio import review
from studio.models import Project

pytestmark = pytest.mark.django_db

Status = Illustration.Status
REFUSED = (
    "Could not reach the image service (HTTPConnectionPool(host='127.0.0.1', port=9): Max "
    "retries exceeded with url: /v1/images/generations (Caused by NewConnectionError('"
    "<urllib3.connection.HTTPConnection object at 0x7f3a>: Failed to establish a new "
    "connection: [Errno 111] Connection refused')))"
)


def test_python_exception_text_becomes_plain_words():
    assert plain_message(REFUSED) == "Could not reach the image service (connection refused)"
    assert (
        plain_message(
            "The service failed 6 times in a row (HTTP 503). The service said: " + REFUSED
        )
        == "The service failed 6 times in a row (HTTP 503). The service said: Could not reach "
        "the image service (connection refused)"
    )
    assert plain_message("unexpected error: KeyError('data')") == (
        "An unexpected error (History has the details)"
    )
    assert plain_message("Your request was rejected by the safety system.") == (
        "Your request was rejected by the safety system."
    )


def test_the_card_shows_plain_words_and_history_keeps_the_technical_text(
    client, editor, make_project
):
    project = make_project(pages=1)
    page = project.pages.get()
    Illustration.objects.create(
        page=page,
        status=Status.FAILED,
        failure_reason="exhausted",
        attempts_made=3,
        error_message=REFUSED,
    )
    client.force_login(editor)
    html = client.get(project.get_absolute_url()).content.decode()
    assert "Failed after 3 attempts: Could not reach the image service (connection refused)" in html
    assert "Errno" not in html


def test_rejected_pages_are_not_retried_by_retry_failed(make_project):
    project = make_project(pages=3)
    one, two, three = project.pages.all()
    Illustration.objects.create(page=one, status=Status.FAILED, failure_reason="exhausted")
    Illustration.objects.create(page=two, status=Status.FAILED, failure_reason="rejected")

    progress = selectors.project_progress(project)
    assert (progress.failed, progress.rejected) == (1, 1)
    result = services.retry_failed(project=project)

    assert result.count == 1
    assert Illustration.objects.filter(status=Status.QUEUED).get().page == one


def test_edit_prompt_opens_with_the_refused_prompt_and_the_reason(client, editor, make_project):
    project = make_project(pages=1)
    page = project.pages.get()
    Illustration.objects.create(
        page=page,
        status=Status.FAILED,
        failure_reason="rejected",
        error_message="Your request was rejected by the safety system.",
    )
    client.force_login(editor)
    html = client.get(reverse("page-prompt", args=[page.pk])).content.decode()
    assert "Page 1: the fox crosses meadow number 1.</textarea>" in html
    assert "The image service rejected this prompt:</strong> Your request was rejected" in html
    history = client.get(reverse("page-history", args=[page.pk])).content.decode()
    assert "Picture: Rejected" in history


def test_generate_missing_does_not_resume_a_halted_run(make_project):
    project = make_project(pages=3)
    run = services.generate_missing(project=project).run
    Illustration.objects.filter(page__number=3).delete()
    Run.objects.filter(pk=run.pk).update(state=Run.State.HALTED, halt_reason="out_of_credits")

    result = services.generate_missing(project=project)

    assert result.count == 1
    assert Run.objects.get(pk=run.pk).state == Run.State.HALTED
    assert Illustration.objects.filter(run=run, status=Status.QUEUED).count() == 3


def test_pictures_out_of_date_are_counted_priced_and_regenerated(
    client, editor, make_project, drain, settings
):
    settings.STUDIO_PRICES = {"embedded": 0.5}
    project = make_project(pages=3)
    drain(services.generate_missing(project=project).run.pk)
    project.style_guide = "Watercolour, soft light."
    project.save()

    client.force_login(editor)
    html = client.get(project.get_absolute_url()).content.decode()
    assert "3 pictures out of date" in html
    assert 'Regenerate changed pages <span class="badge">(3)</span> ≈ $1.50' in html
    assert "✓ Complete" not in client.get(reverse("project-list")).content.decode()
    assert selectors.review_header(project).outdated_estimate == Decimal("1.5")

    response = client.post(reverse("project-regenerate-outdated", args=[project.pk]))
    assert response.status_code == 302
    assert Illustration.objects.filter(status=Status.QUEUED).count() == 3
    assert Illustration.objects.filter(status=Status.COMPLETE).count() == 3  # kept meanwhile
    assert services.regenerate_outdated(project=project).count == 0  # on their way already


def test_the_budget_banner_and_the_header_show_the_same_spend(
    client, editor, make_project, openai_settings, fake_openai, drain
):
    project = make_project(pages=6)
    project.budget = Decimal("0.10")
    project.save()
    drain(services.generate_missing(project=project).run.pk)
    # A call that was in flight at the halt is entered after it: the banner reads the
    # ledger now, as the header does, not the figure written into the halt's message.
    ledger.enter(
        attempt_id=999_999,
        amount=Decimal("0.042"),
        basis="price",
        confirmed=True,
        project_id=project.pk,
        run_id=project.runs.get().pk,
        kind="illustration",
        account="openai",
        provider="openai",
        model="gpt-image-1",
    )
    client.force_login(editor)
    html = client.get(project.get_absolute_url()).content.decode()

    spent = money(selectors.spend(project, None).project)
    assert spent not in project.runs.get().message  # the halt's own figure is stale
    assert f"Spent {spent}" in html
    assert (
        "Budget reached.</strong> The next picture would take this project past its "
        f"budget of $0.10: it has spent {spent}"
    ) in html
    assert "Generation halted." not in html  # a budget halt is not the service's state
    assert 'state--halted">halted' not in html


def test_a_poll_from_a_page_that_saw_another_run_state_gets_every_card(
    client, editor, make_project
):
    project = make_project(pages=3)
    run = services.generate_missing(project=project).run
    services.pause(project=project)
    client.force_login(editor)
    url = reverse("project-poll", args=[project.pk])
    since = f"{(run.created_at.timestamp() + 3600):.3f}"  # nothing changed after this

    same = client.get(url, {"since": since, "run": f"{run.pk}-paused"}, HTTP_HX_REQUEST="true")
    moved = client.get(url, {"since": since, "run": f"{run.pk}-running"}, HTTP_HX_REQUEST="true")

    assert same.content.decode().count('class="card card--') == 0
    assert moved.content.decode().count('class="card card--paused"') == 3


def test_a_picture_from_an_earlier_run_reads_complete_and_says_when_it_was_made(
    client, editor, make_project, drain
):
    project = make_project(pages=2)
    run = services.generate_missing(project=project).run
    drain(run.pk, limit=1)
    services.stop(project=project)
    services.generate_missing(project=project)  # a new run for the other page

    client.force_login(editor)
    html = client.get(project.get_absolute_url()).content.decode()

    made = Illustration.objects.get(status=Status.COMPLETE)
    when = timezone.localtime(made.finished_at).strftime("%Y-%m-%d %H:%M")
    assert html.count('class="card card--complete"') == 1
    assert f'title="Complete (made {when} by embedded)"' in html
    history = client.get(reverse("page-history", args=[made.page_id])).content.decode()
    assert f"made {timezone.localtime(made.finished_at):%Y-%m-%d %H:%M:%S}" in history


def primary_buttons(html: str) -> list[str]:
    """Return the words of the header's primary buttons."""
    header = html.split('id="live-header"', 1)[1].split("</section>", 1)[0]
    found = re.findall(r'<button class="button button--primary"[^>]*>(.*?)</button>', header, re.S)
    return [" ".join(re.sub(r"<[^>]+>", "", words).split()) for words in found]


def test_the_header_has_one_primary_button_the_next_useful_action(
    client, editor, make_project, drain, settings
):
    settings.STUDIO_PRICES = {"embedded": 0.5}
    project = make_project(pages=2)
    client.force_login(editor)
    url = project.get_absolute_url()
    assert primary_buttons(client.get(url).content.decode()) == [
        "Generate Missing Illustrations (2)"
    ]

    run = services.generate_missing(project=project).run
    assert primary_buttons(client.get(url).content.decode()) == ["Pause"]
    Run.objects.filter(pk=run.pk).update(state=Run.State.HALTED, halt_reason="out_of_credits")
    assert primary_buttons(client.get(url).content.decode()) == ["Resume"]
    Run.objects.filter(pk=run.pk).update(state=Run.State.RUNNING, halt_reason="")
    drain(run.pk)
    # Complete: what is left is approving the pictures.
    assert primary_buttons(client.get(url).content.decode()) == ["Approve all (2)"]
    services.approve_all(project=project)
    assert primary_buttons(client.get(url).content.decode()) == []

    project.pages.filter(number=2).update(prompt="The fox asleep.")
    services.unapprove_page(page=project.pages.get(number=2))
    html = client.get(url).content.decode()
    assert primary_buttons(html) == ["Regenerate changed pages (1) ≈ $0.50"]
    assert "approved ones are redrawn only one by one" not in html

    # While the new picture is on its way it is not offered again, and is on its way.
    services.regenerate_outdated(project=project)
    html = client.get(url).content.decode()
    assert primary_buttons(html) == ["Pause"]
    assert "Regenerate changed pages" not in html
    assert "1 picture on its way" in html
    assert "Run running" in html  # beside "every page is illustrated; 1 out of date"
    assert selectors.review_header(project).regenerable == 0


def test_a_page_drawn_again_does_not_hide_a_missing_page_from_generate_missing(make_project, drain):
    project = make_project(pages=3)
    drain(services.generate_missing(project=project).run.pk)
    Illustration.objects.filter(page__number=3).delete()
    services.queue_page(page=project.pages.get(number=1), regenerate=True)
    Illustration.objects.filter(status=Status.QUEUED).update(status=Status.GENERATING)

    header = selectors.review_header(project)

    assert header.to_queue == 1  # page 3, though page 1's new picture is being drawn
    assert header.on_its_way == 1
    assert services.generate_missing(project=project).count == 1
    assert selectors.review_header(project).on_its_way == 2


def test_a_rejected_page_alone_is_not_the_headers_next_action(client, editor, make_project, drain):
    project = make_project(pages=2)
    drain(services.generate_missing(project=project).run.pk)
    rejected = project.pages.get(number=2)
    rejected.illustrations.update(status=Status.FAILED, failure_reason="rejected")
    client.force_login(editor)

    html = client.get(project.get_absolute_url()).content.decode()

    # Sending the refused prompt again is pointless: Edit prompt and retry is on its card.
    assert primary_buttons(html) == ["Approve all (1)"]
    assert "Generate Missing Illustrations" not in html  # it would send it unchanged
    assert "1 rejected: edit its prompt" in html
    assert "Edit prompt and retry" in html


def test_out_of_date_pictures_of_a_book_whose_characters_send_no_pictures(make_project):
    """Most books send no reference pictures: their pictures are compared as plain values
    (selectors.outdated_pictures), with the same verdicts as page by page."""
    from generation.prompts import compose_prompt

    project = make_project(pages=4, style_guide="Soft watercolour.")
    pages = {page.number: page for page in project.pages.all()}
    sent_with_character = [{"character": 1, "reference": 7, "description": "A fox."}]
    for number, references_sent in [(1, []), (2, []), (3, sent_with_character), (4, [])]:
        Illustration.objects.create(
            page=pages[number],
            status=Status.COMPLETE,
            prompt_sent=compose_prompt(pages[number]),
            references_sent=references_sent,
            approved_at=timezone.now() if number == 4 else None,
        )
    pages[2].prompt = "The fox asleep under the oak."  # drawn from an earlier prompt
    pages[2].save()
    project.pages.filter(number=4).update(text="A new ending.")  # approved, then changed

    # Page 3's character has no picture to send any more: its references changed.
    assert sorted(selectors.outdated_page_ids(project)) == [pages[2].pk, pages[3].pk, pages[4].pk]
    assert sorted(selectors.outdated_page_ids(project, approved=False)) == [
        pages[2].pk,
        pages[3].pk,
    ]
    reasons = {
        number: selectors.outdated_reason(page, page.illustrations.get())
        for number, page in ((n, project.pages.get(number=n)) for n in pages)
    }
    assert reasons == {1: "", 2: "Prompt changed", 3: "Reference changed", 4: "Prompt changed"}


def offers(card) -> tuple[list[str], list[str]]:
    """Return the words of a card's controls: those beside its menu, and its menu's."""
    return [action.label for action in card.actions], [item.label for item in card.menu]


def test_each_card_offers_what_its_page_needs_next(make_project, drain):
    project = make_project(pages=5)
    run = services.generate_missing(project=project).run
    drain(run.pk, limit=1)  # page 1 is drawn; pages 2 to 5 stay queued
    pages = {page.number: page for page in project.pages.all()}
    services.approve_page(page=pages[1])
    services.stop(project=project)  # pages 2 to 5 are missing, with nothing on its way
    Illustration.objects.filter(page=pages[3]).update(
        status=Status.FAILED, failure_reason="exhausted", error_message="HTTP 503"
    )
    Illustration.objects.filter(page=pages[4]).update(
        status=Status.FAILED, failure_reason="rejected", error_message="Refused"
    )
    services.queue_page(page=pages[5])

    cards = {card.page.number: card for card in review.page_cards(project)}
    assert [cards[n].state for n in range(1, 6)] == [
        "complete",
        "pending",
        "failed",
        "rejected",
        "queued",
    ]
    drawn, confirm = offers(cards[1]), cards[1].menu[0].confirm
    assert drawn == (
        [],
        ["Regenerate", "Edit prompt", "Try variants", "Unapprove", "Make clip", "History"],
    )
    assert confirm == "Page 1 is approved. Draw it again? The new picture will need approving."
    assert offers(cards[2]) == (
        ["Generate"],
        ["Generate next", "Edit prompt", "Try variants", "History"],
    )
    assert offers(cards[3]) == (["Retry"], ["Edit prompt", "Try variants", "History"])
    assert offers(cards[4]) == (["Edit prompt and retry"], ["Try variants", "History"])
    assert offers(cards[5]) == ([], ["Generate next", "Edit prompt", "History"])
    assert cards[4].actions[0].drawer and cards[4].actions[0].url == f"/pages/{pages[4].pk}/prompt/"
    assert [cards[n].icon for n in range(1, 6)] == ["✓", "◦", "✗", "⊘", "⋯"]


def test_the_project_list_counts_each_books_out_of_date_pictures_in_a_few_queries(
    make_project, django_assert_num_queries
):
    """A book whose characters send no pictures is compared as plain values, one whose
    characters do is compared page by page: both in the one call the project list makes."""
    from generation.prompts import compose_prompt
    from studio.models import Character, ReferenceImage

    plain = make_project(pages=3, title="No pictures to send")
    with_fox = make_project(pages=3, title="The fox's picture goes along")
    for project in (plain, with_fox):
        for page in project.pages.all():
            Illustration.objects.create(
                page=page, status=Status.COMPLETE, prompt_sent=compose_prompt(page)
            )
    plain.pages.filter(number=1).update(text="A new beginning.")
    fox = Character.objects.create(project=with_fox, name="Fox", description="A red fox.")
    fox.reference = ReferenceImage.objects.create(
        character=fox, image="references/fox.png", source="upload", width=40, height=40
    )
    fox.save()
    fox.pages.add(*with_fox.pages.filter(number__gte=2))  # drawn before it had a picture

    projects = list(Project.objects.filter(pk__in=[plain.pk, with_fox.pk]))
    with django_assert_num_queries(4):  # characters, plain values, pictures, their pages'
        counts = selectors.outdated_counts(projects)
    assert counts == {plain.pk: 1, with_fox.pk: 2}
    assert counts == {p.pk: len(selectors.outdated_pictures(p)) for p in projects}


def pages_in_each_state(make_project):
    """A book of 6: page 1 rejected, pages 2 and 3 failed, page 4 stopped, pages 5 and 6
    never asked for."""
    project = make_project(pages=6)
    page = {page.number: page for page in project.pages.all()}
    Illustration.objects.create(page=page[1], status=Status.FAILED, failure_reason="rejected")
    for number in (2, 3):
        Illustration.objects.create(
            page=page[number], status=Status.FAILED, failure_reason="exhausted"
        )
    Illustration.objects.create(page=page[4], status=Status.CANCELED)
    return project


def queued_numbers() -> list[int]:
    return sorted(
        Illustration.objects.filter(status=Status.QUEUED).values_list("page__number", flat=True)
    )


def test_generate_missing_leaves_failed_pages_to_retry_and_rejected_ones_to_their_prompt(
    client, editor, make_project
):
    project = pages_in_each_state(make_project)

    assert services.generate_missing(project=project).count == 3
    assert queued_numbers() == [4, 5, 6]  # never the refused prompt, nor the failed pages
    assert services.retry_failed(project=project).count == 2
    assert queued_numbers() == [2, 3, 4, 5, 6]
    assert services.generate_missing(project=project).count == 0  # page 1 waits
    assert services.generate_missing_in_section(project=project, section="").count == 0

    # Its prompt edited, the rejected page is sent again from its card's panel.
    client.force_login(editor)
    rejected = project.pages.get(number=1)
    client.post(
        reverse("page-prompt", args=[rejected.pk]),
        {"prompt": "A fox in a meadow, gently.", "retry": "1"},
    )
    assert queued_numbers() == [1, 2, 3, 4, 5, 6]


def test_the_header_offers_each_page_that_needs_attention_once(client, editor, make_project):
    project = pages_in_each_state(make_project)
    client.force_login(editor)

    html = client.get(project.get_absolute_url()).content.decode()

    header = html.split('id="live-header"', 1)[1].split("</section>", 1)[0]
    buttons = re.findall(r"<button[^>]*>(.*?)</button>", header, re.S)
    assert [" ".join(re.sub(r"<[^>]+>", "", words).split()) for words in buttons] == [
        "Generate Missing Illustrations (3)",
        "Retry failed (2)",
    ]
    assert primary_buttons(html) == ["Generate Missing Illustrations (3)"]
    assert "3 illustrations ≈ $0.00" in header  # the estimate is for what it queues
    # The rejected page is not in either count: it is offered to its prompt, on its card.
    rejected = r'<a [^>]*href="\?show=attention"[^>]*>1 rejected: edit its prompt</a>'
    assert re.search(rejected, header)
    # With nothing new to draw, Retry failed is the next useful action.
    run = services.generate_missing(project=project).run
    Illustration.objects.filter(status=Status.QUEUED).update(status=Status.COMPLETE)
    runs.settle_run(run.pk)
    assert primary_buttons(client.get(project.get_absolute_url()).content.decode()) == [
        "Retry failed (2)"
    ]
