"""manage.py fake_service SERVICE: one loopback fake image service in the foreground, so
anyone can watch the studio through a bad day (out of credits mid-run, an outage, a slow
service) without an account or a bill."""

import argparse
import errno
import math
import signal

from django.core.management.base import DjangoHelpFormatter

from generation.fakes.base import LoopbackServer
from generation.fakes.chat_images import FakeChatImages
from generation.fakes.fal import FakeFal
from generation.fakes.gemini import FakeGemini
from generation.fakes.openai import FakeImageService
from generation.fakes.replicate import FakePredictionService
from generation.management.base import OperatorCommand, usage_error

USAGE = """\
It speaks the service's real wire format on 127.0.0.1, prints the settings that point the
studio at it (KEY=VALUE lines, for .env or `export`; the other lines start with #), and
serves until Ctrl-C. Restart the studio's processes (runserver, qcluster) with those
settings; the fake accepts only the key it prints.

  python manage.py fake_service openai --port 9001
  python manage.py fake_service gemini --credits 5 --fail-rate 0.2 --latency 1.5

A bad day, on purpose (every knob counts picture calls only, never free look-ups):
  --fail-rate P  that share of calls (0..1) fails with the service's own transient error
  --credits N    after N pictures every call answers the service's out-of-credits error
  --latency S    each successful picture takes S seconds

What each service answers:
  service      transient failure (--fail-rate)    out of credits (--credits)
  openai       500 server_error                   429 insufficient_quota
  gemini       503 UNAVAILABLE (overloaded)       402 RESOURCE_EXHAUSTED (credits depleted)
  openai-chat  502 "Provider returned error"      402 "Insufficient credits"
  replicate    503 to the create                  402 "Insufficient credit" to the create
  fal          500 to the submit                  403 "User is locked ... Exhausted balance"
openai refuses any prompt containing "forbidden" (400 content_policy_violation): that page
fails as rejected, the rest go on.
Replicate and fal pictures finish in --latency seconds (a create held with Prefer: wait
answers finished when it fits; fal's status reads IN_PROGRESS until then).
"""

REFUSED_WORD = "forbidden"

# The one key each fake accepts, shaped like the service's own keys.
KEYS = {
    "openai": "sk-fake-service-0123456789",
    "gemini": "AIzaFakeService-0123456789",
    "openai-chat": "sk-or-v1-fake-service-0123456789",
    "replicate": "r8_fake_service_0123456789",
    "fal": "fake-service-key-id:0123456789",
}


def serve_openai(port: int) -> tuple[LoopbackServer, dict]:
    fake = FakeImageService(port)
    fake.valid_keys = {KEYS["openai"]}
    # A page whose prompt says "forbidden" meets the safety system, as a real one would.
    fake.rules.append((REFUSED_WORD, "400_policy"))
    return fake, {"OPENAI_BASE_URL": fake.url, "OPENAI_API_KEY": KEYS["openai"]}


def serve_gemini(port: int) -> tuple[LoopbackServer, dict]:
    fake = FakeGemini(port)
    fake.valid_keys = {KEYS["gemini"]}
    return fake, {"GEMINI_BASE_URL": fake.url, "GEMINI_API_KEY": KEYS["gemini"]}


def serve_chat_images(port: int) -> tuple[LoopbackServer, dict]:
    fake = FakeChatImages(port)
    fake.valid_keys = {KEYS["openai-chat"]}
    return fake, {
        "STUDIO_CHAT_IMAGE_BASE_URL": fake.url,
        "STUDIO_CHAT_IMAGE_API_KEY": KEYS["openai-chat"],
    }


def serve_replicate(port: int) -> tuple[LoopbackServer, dict]:
    fake = FakePredictionService(port)
    fake.valid_tokens = {KEYS["replicate"]}
    fake.polls_needed = 0  # a prediction ends when its --latency has passed
    return fake, {"REPLICATE_BASE_URL": fake.url, "REPLICATE_API_TOKEN": KEYS["replicate"]}


def serve_fal(port: int) -> tuple[LoopbackServer, dict]:
    fake = FakeFal(port)
    fake.valid_keys = {KEYS["fal"]}
    fake.queue_positions = []  # no queue ahead: a request completes when its --latency has passed
    fake.in_progress_polls = 0
    return fake, {
        "FAL_QUEUE_URL": fake.origin,
        "FAL_PLATFORM_URL": fake.platform_url,
        "FAL_KEY": KEYS["fal"],
    }


def webhook_lines(fake) -> list[str]:
    """Return the comment lines that give the key its webhooks are signed with (Replicate,
    fal): with STUDIO_PUBLIC_URL set too, it calls the studio back when a picture is ready."""
    if isinstance(fake, FakePredictionService):
        key = f"REPLICATE_WEBHOOK_SECRET={fake.webhook_secret}"
    elif isinstance(fake, FakeFal):
        key = f"FAL_WEBHOOK_JWKS='{fake.jwks}'"
    else:
        return []
    return ["# Webhooks (with STUDIO_PUBLIC_URL set), signed for:", f"# {key}"]


SERVICES = {
    "openai": serve_openai,
    "gemini": serve_gemini,
    "openai-chat": serve_chat_images,
    "replicate": serve_replicate,
    "fal": serve_fal,
}


def _number(cast, low: float, high: float, what: str):
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
        return value

    return parse


share = _number(float, 0, 1, "a number from 0 to 1")
count = _number(int, 0, math.inf, "a whole number, 0 or more")
seconds = _number(float, 0, math.inf, "a number of seconds, 0 or more")
port_number = _number(int, 0, 65535, "a port number from 0 to 65535")


class HelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class Command(OperatorCommand):
    help = "Run one loopback fake image service in the foreground.\n\n" + USAGE
    requires_system_checks = []  # it touches neither the database nor the studio's settings

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = HelpFormatter  # keeps the usage's lines and table
        return parser

    def add_arguments(self, parser):
        parser.add_argument("service", choices=list(SERVICES), help="the service to fake")
        parser.add_argument(
            "--port", type=port_number, default=0, help="port on 127.0.0.1 (default: a free one)"
        )
        parser.add_argument(
            "--fail-rate",
            type=share,
            default=0.0,
            metavar="P",
            help="share of calls, 0..1, that fail with the service's transient error (default 0)",
        )
        parser.add_argument(
            "--credits",
            type=count,
            default=None,
            metavar="N",
            help="pictures the account can pay for; then every call is out of credits "
            "(default: no end)",
        )
        parser.add_argument(
            "--latency",
            type=seconds,
            default=0.0,
            metavar="S",
            help="seconds each successful picture takes (default 0)",
        )

    def handle(self, *args, **options):
        name, port = options["service"], options["port"]
        try:
            fake, settings = SERVICES[name](port)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise usage_error(f"port {port} on 127.0.0.1 is in use") from None
            raise usage_error(f"cannot listen on 127.0.0.1:{port}: {error.strerror}") from None
        fake.fail_rate = options["fail_rate"]
        fake.credits = options["credits"]
        fake.latency = options["latency"]
        credits = "no end" if fake.credits is None else str(fake.credits)
        lines = [
            f"# Fake {name} service on {fake.url}: fail rate {fake.fail_rate:g}, "
            f"credits {credits}, latency {fake.latency:g} s.",
            "# Point the studio at it (in .env or exported), then restart its processes:",
            f"STUDIO_IMAGE_PROVIDER={name}",
            *(f"{key}={value}" for key, value in settings.items()),
            *webhook_lines(fake),
            "# Serving until Ctrl-C.",
        ]
        signal.signal(signal.SIGTERM, _interrupt)  # a supervisor's stop ends it as cleanly
        fake.start()
        try:
            # Printed inside: a Ctrl-C that comes the moment "Serving" is read still ends
            # it cleanly.
            self.stdout.write("\n".join(lines))
            self.stdout.flush()
            while True:
                signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            fake.stop()
        self.stdout.write("# Stopped.")
