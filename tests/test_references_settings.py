"""Settings name the image services whose model takes no reference pictures."""

import re

import pytest
from django.urls import reverse

from generation.providers import configured_image_services
from generation.selectors import image_service_choices

pytestmark = pytest.mark.django_db


def test_a_service_whose_model_takes_no_references_is_marked_no_references(
    client, editor, make_project, settings
):
    settings.REPLICATE_API_TOKEN = "r8_test_token"
    settings.STUDIO_REPLICATE_IMAGE_MODEL = "black-forest-labs/flux-schnell"
    settings.FAL_KEY = "fal-test-key"
    settings.STUDIO_FAL_IMAGE_MODEL = "fal-ai/nano-banana/edit"
    settings.STUDIO_MAX_REFERENCES = 4

    assert {s.name: s.max_references for s in configured_image_services()} == {
        "embedded": 4,
        "replicate": 0,
        "fal": 4,
    }
    labels = dict(image_service_choices())
    assert labels["replicate"].endswith(" · no references")
    assert labels["replicate"].startswith("Replicate (black-forest-labs/flux-schnell) · ")
    assert "no references" not in labels["fal"]
    assert "no references" not in labels["embedded"]

    project = make_project(pages=1)
    client.force_login(editor)
    form = client.get(reverse("project-settings", args=[project.pk])).content.decode()
    options = dict(re.findall(r'<option value="([^"]+)"[^>]*>([^<]+)</option>', form))
    assert options["replicate"].endswith("· no references")
    assert "no references" not in options["fal"]


def test_a_model_that_takes_one_picture_takes_the_pages_references_as_a_sheet(settings):
    settings.REPLICATE_API_TOKEN = "r8_test_token"
    settings.STUDIO_REPLICATE_IMAGE_MODEL = "black-forest-labs/flux-kontext-pro"
    settings.STUDIO_MAX_REFERENCES = 3
    labels = dict(image_service_choices())
    assert "no references" not in labels["replicate"]
