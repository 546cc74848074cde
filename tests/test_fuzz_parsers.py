"""Fuzz: every parser of editor or service text ends in time on any input (issue 30, item 2).

Each input up to 100 KB must be parsed (or refused) within BUDGET seconds: a budget on
pathological inputs, never a performance goal. Inputs are built from short motifs repeated,
which is how backtracking patterns are made to blow up (a heading followed by 3,000 spaces
took a gunicorn worker 30 s). The examples are few and derandomized so the file stays quick
and a failure reproduces.
"""

import re
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from generation.kinds import story_pages
from generation.providers.base import StoryPage
from generation.providers.openai import _story_page
from studio.characters import names_on, parse_aliases
from studio.forms import (
    CharacterDetailsForm,
    ManuscriptForm,
    NewPageForm,
    PageForm,
    PremiseForm,
    ProjectSettingsForm,
    PromptForm,
)
from studio.manuscript import (
    ManuscriptError,
    decode_manuscript,
    parse_manuscript,
    section_heading,
    split_pages,
    split_sections,
)
from studio.models import Character, Page

BUDGET = 0.5  # seconds for one input of up to 100 KB
MAX_INPUT = 100_000

fuzz = hypothesis_settings(
    max_examples=40,
    deadline=None,  # the budget below is measured by the test itself
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the forms only read the database
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

# The characters that matter to the parsers, and a few that test Unicode's edges.
ALPHABET = " \t\n\r#-x\ufeff\u00a0\u2028\x00\x0bé🦊,."
motif = st.text(alphabet=ALPHABET, min_size=1, max_size=12)


@st.composite
def hostile_text(draw) -> str:
    """Return up to 100 KB: a prefix, a motif repeated to a size from small to the largest,
    a suffix."""
    prefix = draw(st.sampled_from(["", "## x", "## ", "---\n", "# ", "##\t", "x\n"]))
    size = draw(st.sampled_from([10, 300, 3_000, 30_000, MAX_INPUT]))
    repeated = draw(motif) * size
    suffix = draw(st.text(alphabet=ALPHABET, max_size=8))
    return (prefix + repeated + suffix)[:MAX_INPUT]


def within_budget(parse, *args, refusals=(ManuscriptError,)):
    """Run parse(*args), refusals allowed; fail if it took longer than the budget."""
    started = time.perf_counter()
    try:
        result = parse(*args)
    except refusals:
        result = None
    elapsed = time.perf_counter() - started
    assert elapsed < BUDGET, f"{parse.__qualname__} took {elapsed:.2f} s on {len(args[0]):,} chars"
    return result


# --- the manuscript -----------------------------------------------------------------------


def test_a_heading_followed_by_thousands_of_spaces_is_read_at_once():
    within_budget(parse_manuscript, "## x" + " " * 3000 + "y")
    assert within_budget(split_sections, "## x" + " " * 3000 + "y\nText.")[0].section == (
        "x" + " " * 3000 + "y"
    )
    within_budget(split_sections, "## x" + " " * MAX_INPUT + "y\nText.")


def test_a_line_longer_than_the_limit_is_refused_with_its_number():
    with pytest.raises(ManuscriptError, match=r"Line 3 has 10,001 characters; a line can have at"):
        parse_manuscript("One.\n---\n" + "y" * 10_001)


# The pattern the studio used to read headings with: the reference the new code must agree
# with, on lines short enough for it to finish.
OLD_HEADING = re.compile(r"^[ \t]*##[ \t]+(?P<name>\S.*?)[ \t]*#*[ \t]*$")


@fuzz
@given(line=st.text(alphabet=" \t#xé\u00a0\x0b-", max_size=16))
def test_headings_are_read_as_the_old_pattern_read_them(line):
    match = OLD_HEADING.match(line)
    assert section_heading(line) == (match["name"] if match else None)


@fuzz
@given(text=hostile_text())
def test_the_manuscript_splitters_end_in_time(text):
    within_budget(split_pages, text)
    within_budget(split_sections, text)
    within_budget(parse_manuscript, text)
    within_budget(decode_manuscript, text.encode("utf-8", errors="replace"))


# --- the forms ----------------------------------------------------------------------------


def form_valid(form_class, data, **kwargs) -> bool:
    return form_class(data=data, **kwargs).is_valid()


@pytest.mark.django_db
@fuzz
@given(text=hostile_text())
def test_the_manuscript_form_ends_in_time_pasted_or_uploaded(text):
    within_budget(lambda t: form_valid(ManuscriptForm, {"title": t[:50], "manuscript": t}), text)
    upload = SimpleUploadedFile("book.md", text.encode("utf-8", errors="replace"))
    within_budget(
        lambda t: form_valid(ManuscriptForm, {"title": "T"}, files={"upload": upload}), text
    )


@pytest.mark.django_db
@fuzz
@given(text=hostile_text())
def test_the_project_and_story_forms_end_in_time(text):
    within_budget(
        lambda t: form_valid(ProjectSettingsForm, {"title": t, "style_guide": t, "budget": t}),
        text,
    )
    within_budget(
        lambda t: form_valid(
            PremiseForm, {"title": "T", "premise": t, "audience": t, "page_count": t}
        ),
        text,
    )


@pytest.mark.django_db
@fuzz
@given(text=hostile_text())
def test_the_page_forms_end_in_time(make_project, text):
    # One page for every example: the database is not rolled back between them.
    page = Page.objects.first() or make_project(pages=1).pages.get()
    within_budget(
        lambda t: form_valid(
            PageForm, {"section": t, "label": t, "text": t, "prompt": t}, instance=page
        ),
        text,
    )
    within_budget(lambda t: form_valid(PromptForm, {"prompt": t}, instance=page), text)
    within_budget(
        lambda t: form_valid(NewPageForm, {"text": t, "label": t, "section": t, "after": t}),
        text,
    )


@pytest.mark.django_db
@fuzz
@given(text=hostile_text())
def test_the_character_form_and_name_matching_end_in_time(text):
    within_budget(
        lambda t: form_valid(
            CharacterDetailsForm,
            {"name": t[:80], "kind": "character", "description": t, "aliases": t},
        ),
        text,
    )
    within_budget(parse_aliases, text)
    character = Character(name=text[:80], aliases=parse_aliases(text)[:300])
    within_budget(lambda t: names_on(character, t), text)


# --- the text service's story -------------------------------------------------------------


@fuzz
@given(text=hostile_text())
def test_a_story_page_from_the_text_service_ends_in_time(text):
    within_budget(_story_page, text)
    within_budget(lambda t: _story_page({"text": t, "prompt": t}), text)
    pages = within_budget(lambda t: story_pages([StoryPage(t, t)] * 3, wanted=2), text)
    assert len(pages) <= 2
    assert all(len(t) <= 5000 and len(p) <= 4000 and "\x00" not in t + p for t, p in pages)
