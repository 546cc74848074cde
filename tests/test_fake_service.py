"""manage.py fake_service runs one loopback fake in the foreground: a real process whose
printed settings point the studio's real providers at it over HTTP, with a failure rate,
an end to the credits and a latency, in each service's own words."""

import dataclasses
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from generation.providers.base import (
    AuthFailed,
    ImageRequest,
    OutOfCredits,
    Rejected,
    Transient,
)
from generation.providers.fal import FalProvider
from generation.providers.gemini import GeminiProvider
from generation.providers.openai import OpenAIProvider
from generation.providers.openai_chat import ChatImageProvider
from generation.providers.replicate_image import ReplicateImageProvider
from tests.conftest import ROOT, stop_process_group, worker_env

REQUEST = ImageRequest(
    prompt="A fox in the snow", size="1024x1024", seed=7, idempotency_key="studio-7-1"
)


def no_sleep(seconds):
    pass


class FakeServiceProcess:
    """`manage.py fake_service …` as a subprocess in its own process group; its stdout is
    read line by line, so a test waits for a printed line, never for a guessed time."""

    def __init__(self, *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "fake_service", *args],
            cwd=ROOT,
            env=worker_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)  # the output ended

    def next_line(self, timeout: float = 30) -> str:
        line = self.lines.get(timeout=timeout)
        assert line is not None, f"the command ended: {self.process.stderr.read()}"
        return line

    def settings(self) -> dict[str, str]:
        """Wait until it serves; return the settings it printed."""
        printed = {}
        while (line := self.next_line()) != "# Serving until Ctrl-C.":
            if not line.startswith("#"):
                key, _, value = line.partition("=")
                printed[key] = value
        return printed


@pytest.fixture
def fake_service():
    started: list[FakeServiceProcess] = []

    def start(*args: str) -> FakeServiceProcess:
        started.append(FakeServiceProcess(*args))
        return started[-1]

    yield start
    for fake in started:
        stop_process_group(fake.process)


def use(settings, printed: dict[str, str]) -> None:
    """Point this process's settings where the command said."""
    for key, value in printed.items():
        setattr(settings, key, value)
    settings.STUDIO_PROVIDER_TIMEOUT = 5.0


def test_the_openai_fake_prints_its_settings_and_answers_a_picture(fake_service, settings):
    printed = fake_service("openai", "--port", "0").settings()
    assert list(printed) == ["STUDIO_IMAGE_PROVIDER", "OPENAI_BASE_URL", "OPENAI_API_KEY"]
    assert printed["STUDIO_IMAGE_PROVIDER"] == "openai"
    assert printed["OPENAI_BASE_URL"].startswith("http://127.0.0.1:")
    assert printed["OPENAI_BASE_URL"].endswith("/v1")
    use(settings, printed)
    image = OpenAIProvider().generate(REQUEST)
    assert (image.width, image.height) == (64, 64)


def test_it_listens_on_the_port_asked_for(fake_service, settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    printed = fake_service("openai", "--port", str(port)).settings()
    assert printed["OPENAI_BASE_URL"] == f"http://127.0.0.1:{port}/v1"


def test_with_one_credit_the_second_picture_is_out_of_credits(fake_service, settings):
    use(settings, fake_service("openai", "--credits", "1").settings())
    provider = OpenAIProvider()
    provider.generate(REQUEST)
    with pytest.raises(OutOfCredits) as refused:
        provider.generate(REQUEST)
    assert refused.value.http_status == 429
    assert refused.value.code == "insufficient_quota"
    with pytest.raises(OutOfCredits):
        provider.generate(REQUEST)


def test_the_openai_fake_refuses_a_forbidden_prompt_as_the_safety_system_does(
    fake_service, settings
):
    use(settings, fake_service("openai").settings())
    refused_prompt = dataclasses.replace(REQUEST, prompt="A forbidden door in the wall")
    with pytest.raises(Rejected) as refused:
        OpenAIProvider().generate(refused_prompt)
    assert (refused.value.http_status, refused.value.code) == (400, "content_policy_violation")
    assert OpenAIProvider().generate(REQUEST).width == 64  # the other pages go on


def test_with_a_failure_rate_of_one_every_call_is_transient(fake_service, settings):
    use(settings, fake_service("openai", "--fail-rate", "1").settings())
    with pytest.raises(Transient) as failed:
        OpenAIProvider().generate(REQUEST)
    assert failed.value.http_status == 500


def test_the_latency_is_how_long_a_picture_takes(fake_service, settings):
    use(settings, fake_service("openai", "--latency", "0.4").settings())
    started = time.monotonic()
    OpenAIProvider().generate(REQUEST)
    assert time.monotonic() - started >= 0.4


def test_it_accepts_only_the_key_it_printed(fake_service, settings):
    use(settings, fake_service("gemini").settings())
    settings.GEMINI_API_KEY = "AIzaSomebodyElse"
    with pytest.raises(AuthFailed):
        GeminiProvider().generate(REQUEST)


def test_ctrl_c_ends_it_cleanly_with_no_process_left(fake_service):
    fake = fake_service("openai")
    fake.settings()
    os.killpg(fake.process.pid, signal.SIGINT)
    assert fake.process.wait(timeout=15) == 0
    assert fake.next_line() == "# Stopped."
    with pytest.raises(ProcessLookupError):
        os.killpg(fake.process.pid, 0)  # nothing is left in its process group


def test_the_gemini_fake_answers_a_picture(fake_service, settings):
    printed = fake_service("gemini").settings()
    assert list(printed) == ["STUDIO_IMAGE_PROVIDER", "GEMINI_BASE_URL", "GEMINI_API_KEY"]
    use(settings, printed)
    assert GeminiProvider().generate(REQUEST).width == 64


def test_the_replicate_fake_answers_a_picture_from_the_create(fake_service, settings):
    printed = fake_service("replicate").settings()
    assert list(printed) == ["STUDIO_IMAGE_PROVIDER", "REPLICATE_BASE_URL", "REPLICATE_API_TOKEN"]
    use(settings, printed)
    provider = ReplicateImageProvider()
    assert provider.wait(provider.create(REQUEST), sleep=no_sleep).width == 64


def test_the_chat_and_fal_fakes_start_and_print_what_their_providers_read(fake_service):
    chat, fal = fake_service("openai-chat"), fake_service("fal")
    assert list(chat.settings()) == [
        "STUDIO_IMAGE_PROVIDER",
        "STUDIO_CHAT_IMAGE_BASE_URL",
        "STUDIO_CHAT_IMAGE_API_KEY",
    ]
    assert list(fal.settings()) == [
        "STUDIO_IMAGE_PROVIDER",
        "FAL_QUEUE_URL",
        "FAL_PLATFORM_URL",
        "FAL_KEY",
    ]


@pytest.mark.parametrize(
    "args, says",
    [
        (["dall-e"], "invalid choice: 'dall-e'"),
        (["openai", "--fail-rate", "1.5"], "--fail-rate: must be a number from 0 to 1"),
        (["openai", "--credits", "-1"], "--credits: must be a whole number, 0 or more"),
        (["openai", "--latency", "-2"], "--latency: must be a number of seconds, 0 or more"),
        (["openai", "--port", "-1"], "--port: must be a port number from 0 to 65535"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, says):
    done = subprocess.run(
        [sys.executable, "manage.py", "fake_service", *args],
        cwd=ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert says in line


def test_a_port_in_use_exits_2_with_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "manage.py", "fake_service", "fal", "--port", str(port)],
            cwd=ROOT,
            env=worker_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"CommandError: port {port} on 127.0.0.1 is in use"]


# --- the knobs of every fake, in process, through each service's real provider -----------


def picture(provider):
    """Draw one picture the way the engine does for the provider's shape."""
    if hasattr(provider, "create"):
        return provider.wait(provider.create(REQUEST), sleep=no_sleep)
    return provider.generate(REQUEST)


# settings fixture, fake fixture, provider, HTTP status of a transient failure, of no credits
KNOBS = [
    ("openai_settings", "fake_openai", OpenAIProvider, 500, 429),
    ("gemini_settings", "fake_gemini", GeminiProvider, 503, 402),
    ("chat_image_settings", "fake_chat_images", ChatImageProvider, 502, 402),
    ("replicate_image_settings", "fake_predictions", ReplicateImageProvider, 503, 402),
    ("fal_settings", "fake_fal", FalProvider, 500, 403),
]
KNOB_NAMES = "settings_fixture, fake_fixture, provider_class, failed_status, no_credit_status"


@pytest.mark.parametrize(KNOB_NAMES, KNOBS)
def test_each_fake_runs_out_of_credits_in_its_own_words(
    request, settings_fixture, fake_fixture, provider_class, failed_status, no_credit_status
):
    request.getfixturevalue(settings_fixture)
    fake = request.getfixturevalue(fake_fixture)
    fake.credits = 2
    provider = provider_class()
    picture(provider)
    picture(provider)
    for _ in range(2):
        with pytest.raises(OutOfCredits) as refused:
            picture(provider)
        assert refused.value.http_status == no_credit_status
    assert fake.credits == 0


@pytest.mark.parametrize(KNOB_NAMES, KNOBS)
def test_each_fake_fails_transiently_at_its_failure_rate(
    request, settings_fixture, fake_fixture, provider_class, failed_status, no_credit_status
):
    request.getfixturevalue(settings_fixture)
    fake = request.getfixturevalue(fake_fixture)
    fake.fail_rate = 1.0
    with pytest.raises(Transient) as failed:
        picture(provider_class())
    assert failed.value.http_status == failed_status
    fake.fail_rate = 0.0
    assert picture(provider_class()).width == 64


def test_a_replicate_prediction_ends_when_its_latency_has_passed(
    replicate_image_settings, fake_predictions
):
    fake_predictions.polls_needed = 0
    fake_predictions.latency = 0.3
    provider = ReplicateImageProvider()
    started = time.monotonic()
    prediction_id = provider.create(REQUEST)  # held with Prefer: wait until it ends
    assert time.monotonic() - started >= 0.3
    assert provider.wait(prediction_id, sleep=no_sleep).width == 64
    assert sum(fake_predictions.polls.values()) == 0


def test_a_fal_request_is_in_progress_until_its_latency_has_passed(fal_settings, fake_fal):
    fal_settings.STUDIO_PROVIDER_TIMEOUT = 5.0
    fake_fal.queue_positions = []
    fake_fal.in_progress_polls = 0
    fake_fal.latency = 0.3
    provider = FalProvider()
    progress = []
    started = time.monotonic()
    image = provider.wait(
        provider.create(REQUEST), sleep=lambda s: time.sleep(0.1), progress=progress.append
    )
    assert image.width == 64
    assert time.monotonic() - started >= 0.3
    assert progress and set(progress) == {"Generating"}
