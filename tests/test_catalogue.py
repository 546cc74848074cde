"""The catalogue of models (generation/catalogue.toml): no default is ever a shut-down model,
every model a provider can send is in it with a source for its facts, and the README's
Services table is its rendering."""

import ast
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings

from generation import catalogue
from generation.fakes.chat_images import MODELS as CHAT_MODELS
from generation.fakes.fal import MODELS as FAL_MODELS
from generation.fakes.gemini import MODELS as GEMINI_MODELS
from generation.fakes.openai import FakeImageService
from generation.fakes.replicate import MODELS as REPLICATE_MODELS
from generation.providers import IMAGE_SERVICES
from tests.conftest import ROOT

SERVICES = ("openai", "gemini", "openai-chat", "replicate", "fal")
# The date the studio was last checked against its services' announcements.
CHECKED_ON = date(2026, 12, 7)


def dead_defaults(today: date) -> list[str]:
    """Return the services whose default model is shut down on `today`."""
    return [
        f"{service}: {catalogue.default(service)}"
        for service in SERVICES
        if catalogue.model(service, catalogue.default(service)).state(today) == catalogue.RETIRED
    ]


@pytest.mark.parametrize(
    "today", [CHECKED_ON, datetime.now(UTC).date()], ids=["2026-12-07", "the real date"]
)
def test_no_default_is_past_its_shutdown(today):
    assert dead_defaults(today) == []


def test_the_check_catches_a_dead_default(edited_catalogue):
    edited_catalogue(
        lambda text: text.replace(
            'default = "gemini-3.1-flash-image"', 'default = "gemini-2.5-flash-image"'
        )
    )
    assert dead_defaults(CHECKED_ON) == ["gemini: gemini-2.5-flash-image"]
    assert dead_defaults(date(2026, 10, 1)) == []  # the day before it was shut down


def test_the_settings_default_to_the_catalogue_and_every_default_is_listed():
    defaults = {
        "openai": "gpt-image-2",
        "gemini": "gemini-3.1-flash-image",
        "openai-chat": "google/gemini-3.1-flash-image",
        "replicate": "black-forest-labs/flux-2-pro",
        "fal": "fal-ai/flux-2-pro/edit",
    }
    assert {service: catalogue.default(service) for service in SERVICES} == defaults
    for service in SERVICES:
        assert catalogue.model(service, catalogue.default(service)).known
        # What a studio without the setting in its environment draws with.
        setting = IMAGE_SERVICES[service][2]
        assert setting in open(ROOT / "studio/settings.py").read()


def test_every_model_a_provider_can_send_is_in_the_catalogue():
    # fal sends an edit model's text-to-image sibling for a page without references.
    for listed in catalogue.models("fal"):
        if listed.text_model:
            assert catalogue.model("fal", listed.text_model).known, listed.text_model
    # Every catalogued model is one its fake serves (the fakes are the services in CI).
    served = {
        "openai": FakeImageService.models,
        "gemini": GEMINI_MODELS,
        "openai-chat": CHAT_MODELS,
        "replicate": set(REPLICATE_MODELS),
        "fal": FAL_MODELS,
    }
    for service in SERVICES:
        assert catalogue.default(service) in served[service], service
    # And the other way: every image model a fake serves (the services' own lists, in CI) is
    # catalogued, so nothing the studio can be pointed at goes unpriced and undated. The
    # fakes' text (gemini-2.5-flash) and video (minimax/video-01) models are not images.
    images = {
        **served,
        "gemini": {name for name in GEMINI_MODELS if "-image" in name},
        "replicate": {name for name, kind in REPLICATE_MODELS.items() if kind == "image"},
    }
    uncatalogued = {
        (service, name)
        for service in SERVICES
        for name in images[service]
        if not catalogue.model(service, name).known
    }
    assert uncatalogued == set()


def unsourced_facts() -> list[str]:
    """Return "service model: fact" for each fact a model states without a source (its
    own, or its service's [<service>.sources])."""
    return [
        f"{service} {listed.name}: {fact}"
        for service in SERVICES
        for listed in catalogue.models(service)
        for fact in listed.unsourced()
    ]


def test_every_fact_has_its_source():
    assert unsourced_facts() == []
    for service in SERVICES:
        for listed in catalogue.models(service):
            # Sizes, references, batch and webhooks are stated by every model.
            assert {"sizes", "references", "batch", "webhooks"} <= set(listed.stated())
            if listed.shutdown:
                assert listed.replacement, listed.name
                assert catalogue.model(service, listed.replacement).known, listed.replacement


def test_a_fact_without_its_source_is_caught(edited_catalogue):
    # A model's own source removed: a fact of that model only.
    edited_catalogue(
        lambda text: text.replace(
            'prices = "https://openrouter.ai/google/gemini-3.1-flash-image"\n', "", 1
        )
    )
    assert unsourced_facts() == ["openai-chat google/gemini-3.1-flash-image: prices"]


def test_a_service_source_is_inherited_by_every_model_of_the_service(edited_catalogue):
    header = "[replicate.sources]\n"

    def without_webhooks_source(text: str) -> str:
        start = text.index(header)
        line = text.index("webhooks = ", start)
        return text[:line] + text[text.index("\n", line) + 1 :]

    edited_catalogue(without_webhooks_source)
    assert unsourced_facts() == [
        f"replicate {listed.name}: webhooks" for listed in catalogue.models("replicate")
    ]


def test_a_model_it_does_not_list_is_still_a_model_with_nothing_promised():
    unknown = catalogue.model("openai", "my-own-model")
    assert (unknown.known, unknown.batch, unknown.webhooks) == (False, False, False)
    assert (unknown.shutdown, unknown.replacement) == (None, "")
    assert unknown.state(CHECKED_ON) == catalogue.CURRENT
    # A Replicate model named with its version is the model's.
    assert catalogue.model("replicate", "black-forest-labs/flux-2-pro:00b07c32").known


def test_lifecycle_dates_and_replacements_of_the_gemini_image_models():
    flash = catalogue.model("gemini", "gemini-2.5-flash-image")
    assert (flash.shutdown, flash.replacement) == (date(2026, 10, 2), "gemini-3.1-flash-image")
    assert flash.state(date(2026, 9, 1)) == catalogue.CURRENT
    assert flash.state(date(2026, 9, 2)) == catalogue.RETIRING  # 30 days before
    assert flash.state(date(2026, 10, 2)) == catalogue.RETIRED
    for preview in ("gemini-3.1-flash-image-preview", "gemini-3-pro-image-preview"):
        assert catalogue.model("gemini", preview).shutdown == date(2026, 6, 25)
    for ga in ("gemini-3.1-flash-image", "gemini-3-pro-image"):
        assert catalogue.model("gemini", ga).released == "2026-05-28"
        assert catalogue.model("gemini", ga).shutdown is None
    assert flash.notice(date(2026, 12, 7)) == (
        "gemini-2.5-flash-image was shut down by the service on 2026-10-02: the studio no "
        "longer calls it. Use gemini-3.1-flash-image instead."
    )
    assert flash.notice(date(2026, 9, 30)) == (
        "gemini-2.5-flash-image will be shut down on 2026-10-02 (in 2 days). "
        "Use gemini-3.1-flash-image instead."
    )


def test_gpt_image_2_size_rules_name_the_rule_broken():
    rules = catalogue.model("openai", "gpt-image-2")
    assert rules.size_problem("1024x1024") == ""
    assert rules.size_problem("3840x2160") == ""
    assert rules.size_problem("2640x2640") == ""  # an 8.75 in page at about 300 DPI
    assert rules.size_problem("1000x1000") == (
        "gpt-image-2 takes 1000x1000 only with both sides a multiple of 16."
    )
    assert "no side over 3,840 px" in rules.size_problem("4096x2048")
    assert "the long side at most 3 times the short one" in rules.size_problem("3840x1024")
    assert "at least 655,360 pixels in all" in rules.size_problem("512x512")
    assert catalogue.model("openai", "gpt-image-1.5").size_problem("2048x2048") == (
        "gpt-image-1.5 takes only these sizes: 1024x1024, 1536x1024, 1024x1536, auto."
    )


def test_prices_come_from_the_catalogue(settings):
    from generation.pricing import charged, price_per_image, usage_cost

    assert price_per_image("gemini", "gemini-3.1-flash-image", "1024x1024") == Decimal("0.067")
    assert price_per_image("openai", "gpt-image-1", "1024x1536") == Decimal("0.063")
    assert price_per_image("embedded", "", "256x256") == Decimal(0)
    assert price_per_image("openai", "my-own-model", "1024x1024") is None
    settings.STUDIO_PRICES = {"gemini:gemini-3.1-flash-image": 0.05}
    assert price_per_image("gemini", "gemini-3.1-flash-image", "1024x1024") == Decimal("0.05")
    usage = {"input_tokens_details": {"text_tokens": 100, "image_tokens": 0}, "output_tokens": 1000}
    # gpt-image-2: $5 a million text tokens in, $30 a million out.
    assert usage_cost("openai", "gpt-image-2", usage) == Decimal("0.0305")
    result = type("Result", (), {"reported_cost": None, "usage": usage})()
    assert charged("openai", "gpt-image-2", "1024x1024", result) == (Decimal("0.0305"), "usage")


def string_constants(source: str) -> list[tuple[int, str]]:
    """Return the string constants of Python source that are not docstrings."""
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_nothing_outside_the_catalogue_names_a_model():
    """The models (and with them their prices) live in catalogue.toml alone: no code or
    template outside it names one (the fakes, which are the services, and the tests may)."""
    names = re.compile(r"gpt-image|dall-e|gemini-[23]|flux|nano-banana|kontext")
    offenders = []
    for folder in ("generation", "studio"):
        for path in (ROOT / folder).rglob("*.py"):
            if "fakes" in path.parts or "migrations" in path.parts:
                continue
            for number, value in string_constants(path.read_text()):
                if names.search(value):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {value!r}")
    for path in (ROOT / "templates").rglob("*.html"):
        if names.search(path.read_text()):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_the_readme_services_table_is_the_catalogues_rendering():
    rendering = catalogue.table(datetime.now(UTC).date(), defaults_only=True)
    assert rendering in (ROOT / "README.md").read_text()
    full = catalogue.table(datetime.now(UTC).date())
    assert full in (ROOT / "docs/services.md").read_text()


def test_the_catalogue_is_read_once():
    catalogue.services.cache_clear()
    first = catalogue.services()
    assert catalogue.services() is first
    assert settings.GEMINI_IMAGE_MODEL  # the settings read it at import
    assert timedelta(days=catalogue.WARN_DAYS) == timedelta(days=30)


def test_webhooks_are_asked_for_where_the_catalogue_says_so(edited_catalogue):
    from generation.providers.webhooks import supports_webhooks

    model = "black-forest-labs/flux-2-pro"
    assert supports_webhooks("replicate", model)
    assert supports_webhooks("replicate", "someone/a-model-it-does-not-list")  # any prediction
    assert not supports_webhooks("openai", catalogue.default("openai"))
    header = f'[replicate.models."{model}"]\n'

    def without_webhooks(text: str) -> str:
        start = text.index(header)
        block = text[start:].replace("webhooks = true", "webhooks = false", 1)
        return text[:start] + block

    edited_catalogue(without_webhooks)
    assert not supports_webhooks("replicate", model)
