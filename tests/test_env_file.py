"""A checkout's .env: `make run` writes it once, settings read it, the environment wins,
and without it (production) a missing secret key is refused in one clear line, as is a
webhook key that could verify nothing."""

import os
import shutil
import subprocess
import sys

from tests.conftest import ROOT

SECRET_KEY_MISSING = (
    "manage.py: Set DJANGO_SECRET_KEY (or DJANGO_DEBUG=true for local development)."
    " `make run` writes both to .env for a development checkout."
)
SHOW_SETTINGS = "from django.conf import settings; print(settings.DEBUG, settings.SECRET_KEY)"


def clean_env(**extra) -> dict[str, str]:
    """Return this environment without the studio's settings (which the suite sets)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "STUDIO_"))}
    return {**env, **extra}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_settings_read_the_env_file_for_what_the_environment_leaves_unset(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("DJANGO_DEBUG=true\nDJANGO_SECRET_KEY=from-the-file\n")

    result = manage(
        "shell", "--no-imports", "-c", SHOW_SETTINGS, env=clean_env(STUDIO_ENV_FILE=str(env_file))
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "True from-the-file\n"


def test_the_environment_wins_over_the_env_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("DJANGO_DEBUG=true\nDJANGO_SECRET_KEY=from-the-file\n")
    env = clean_env(
        STUDIO_ENV_FILE=str(env_file), DJANGO_DEBUG="false", DJANGO_SECRET_KEY="from-the-env"
    )

    result = manage("shell", "--no-imports", "-c", SHOW_SETTINGS, env=env)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "False from-the-env\n"


def test_without_an_env_file_or_a_secret_key_every_command_refuses_in_one_clear_line():
    # STUDIO_ENV_FILE empty reads no file: a production machine, whatever this checkout has.
    env = clean_env(STUDIO_ENV_FILE="")
    for command in (["check"], ["generation_status"], ["shell", "-c", "import studio.models"]):
        result = manage(*command, env=env)

        assert result.returncode == 1, command
        assert result.stdout == "", command
        assert result.stderr == SECRET_KEY_MISSING + "\n", command  # not "Models aren't loaded"


def test_a_webhook_key_that_cannot_verify_anything_is_refused_at_start_in_one_line():
    # A key that would refuse every delivery is said at start, not at the first webhook.
    env = clean_env(STUDIO_ENV_FILE="", DJANGO_SECRET_KEY="a-key", DJANGO_DEBUG="false")
    bad = {
        "REPLICATE_WEBHOOK_SECRET": (
            "r8_not_the_signing_secret",
            "REPLICATE_WEBHOOK_SECRET must be Replicate's whsec_… secret",
        ),
        "FAL_WEBHOOK_JWKS": (
            "https://rest.alpha.fal.ai/.well-known/jwks.json",
            "FAL_WEBHOOK_JWKS must be fal's JWKS, a JSON object",
        ),
    }
    for name, (value, message) in bad.items():
        result = manage("check", env={**env, name: value})

        assert result.returncode == 1, name
        assert result.stdout == "", name
        assert result.stderr == f"manage.py: {message}\n", name

    good = {
        "REPLICATE_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "FAL_WEBHOOK_JWKS": '{"keys": []}',
    }
    result = manage("check", env={**env, **good})
    assert result.returncode == 0, result.stderr


def test_the_suite_never_reads_a_developers_env_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("DJANGO_DEBUG=true\nSTUDIO_IMAGE_PROVIDER=openai\n")
    show = "from django.conf import settings; print(settings.DEBUG, settings.STUDIO_IMAGE_PROVIDER)"
    env = clean_env(STUDIO_ENV_FILE=str(env_file), DJANGO_SETTINGS_MODULE="tests.settings")

    result = manage("shell", "--no-imports", "-c", show, env=env)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "False embedded\n"


def test_make_writes_the_env_file_once_in_development_mode_with_a_fresh_key(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    make = ["make", "--no-print-directory", "-C", str(tmp_path), ".env"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}

    first = subprocess.run(make, env=env, capture_output=True, text=True)
    written = (tmp_path / ".env").read_text()
    again = subprocess.run(make, env=env, capture_output=True, text=True)

    assert first.returncode == 0, first.stderr
    assert first.stdout == "Writing .env: development mode and a fresh secret key (git-ignored)\n"
    debug, key = written.splitlines()
    assert debug == "DJANGO_DEBUG=true"
    assert key.startswith("DJANGO_SECRET_KEY=")
    assert len(key.removeprefix("DJANGO_SECRET_KEY=")) >= 50
    assert again.returncode == 0, again.stderr
    assert again.stdout == "make: '.env' is up to date.\n"
    assert (tmp_path / ".env").read_text() == written  # never overwritten
