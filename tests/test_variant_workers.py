"""Variants with real worker processes: four variants of a page without a picture, held at
the service and answered at the same moment, finish as one current picture and three
versions; no call is made twice and nothing halts."""

import pytest

from generation import services
from generation.models import GenerationAttempt, Illustration, Run
from tests.conftest import openai_env, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

Status = Illustration.Status


def test_four_variants_finishing_together_leave_one_current_picture(
    qcluster, fake_openai, make_project
):
    page = make_project(pages=1).pages.get()
    qcluster(**openai_env(fake_openai, STUDIO_WORKERS=4))
    fake_openai.hold()

    run = services.queue_variants(page=page, count=4).run
    wait_until(lambda: fake_openai.in_flight == 4, timeout=60, message="four calls at once")
    fake_openai.release()
    wait_until(
        lambda: Run.objects.get(pk=run.pk).state == Run.State.FINISHED,
        timeout=60,
        message="the run did not finish",
    )

    statuses = sorted(page.illustrations.values_list("status", flat=True))
    assert statuses == [Status.COMPLETE] + [Status.REPLACED] * 3
    assert fake_openai.call_count == 4
    assert GenerationAttempt.objects.filter(outcome="success").count() == 4
    assert page.illustrations.filter(candidate=True).count() == 4  # the editor picks
