"""Settings for Illustration Studio: one file, read from the environment.

The configuration names in shared/DESIGN.md are a contract; everything here has an
embedded default so that `make run` works offline on a fresh machine.
"""

import json
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

# The image models, their defaults, prices and shutdown dates: one catalogue, no Django.
from generation import catalogue

BASE_DIR = Path(__file__).resolve().parent.parent

# A checkout's own settings: `make run` writes a git-ignored .env once (development mode, a
# fresh secret key), so that every command in a second shell runs as `make run` does.
# It only fills in what the environment leaves unset: the environment always wins.
# Production has no .env; STUDIO_ENV_FILE names another file, or none when empty (the
# test settings set it empty, so a developer's .env never reaches the suite).
ENV_FILE = os.environ.get("STUDIO_ENV_FILE", str(BASE_DIR / ".env"))
if ENV_FILE:
    load_dotenv(ENV_FILE, override=False)


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def env_number(name: str, default: float, cast=int):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return cast(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None


DEBUG = env_bool("DJANGO_DEBUG", False)

# A real key is required in production; the development key only exists with DEBUG on.
SECRET_KEY = env_str("DJANGO_SECRET_KEY") or (
    "insecure-development-key-never-use-in-production" if DEBUG else ""
)
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "Set DJANGO_SECRET_KEY (or DJANGO_DEBUG=true for local development)."
        " `make run` writes both to .env for a development checkout."
    )

ALLOWED_HOSTS = [h for h in env_str("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "django_q",
    "csp",
    "axes",
    "studio",
    "generation",
]

MIDDLEWARE = [
    # First: an oversized body is refused by its Content-Length before anything reads it.
    "studio.middleware.BodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # A 503 that says so, rather than a 500, when Redis cannot be reached for what a
    # request must do there (a sign-out's session delete, django-q2's broker).
    "studio.middleware.RedisUnreachableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into its lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "studio.urls"
WSGI_APPLICATION = "studio.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
# SQLite by default, tuned for a web server and several worker processes sharing one file:
# WAL lets readers and the single writer proceed together; IMMEDIATE makes atomic() blocks
# take the write lock up front, so a waiting writer queues on the busy timeout instead of
# failing at once with "database is locked" when it upgrades from a read.
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": BASE_DIR / "db.sqlite3",
        }
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Workers run many short tasks; reconnecting (and re-running the PRAGMAs) for each
    # one costs more than the task's own queries.
    DATABASES["default"]["CONN_MAX_AGE"] = 60
    DATABASES["default"].setdefault("OPTIONS", {}).update(SQLITE_OPTIONS)
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # No JIT: the review page's counts are thousands of tiny index lookups whose summed
    # estimate passes PostgreSQL's JIT threshold, and compiling them took 90 ms of a
    # 120 ms query on a 2,000-page book. Short queries like the studio's never repay it.
    # (Behind PgBouncer, let it pass: ignore_startup_parameters = options.)
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options["options"] = f"{options.get('options', '')} -c jit=off".strip()

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    # First, so a locked-out sign-in is refused before the password is even checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Sign-in throttling: five failures from one client address, whatever the usernames (one
# password tried on many accounts), lock that address out for fifteen minutes.
AXES_FAILURE_LIMIT = env_number("STUDIO_SIGNIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_number("STUDIO_SIGNIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["ip_address", ["username", "ip_address"]]
# A success must not wipe the address's failures: an attacker with an account of their own
# would sign in between guesses. Failures expire with the cool-off instead.
AXES_RESET_ON_SUCCESS = False
# The client's address: behind STUDIO_BEHIND_PROXY, the one the proxy saw (studio.auth).
AXES_CLIENT_IP_CALLABLE = "studio.auth.client_ip"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "project-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TZ", "UTC")
USE_I18N = True
USE_TZ = True

# --- Security ---------------------------------------------------------------------------
# Behind HTTPS (STUDIO_HTTPS=true in production): secure cookies, redirects and HSTS.
HTTPS = env_bool("STUDIO_HTTPS", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
SECURE_HSTS_SECONDS = 60 * 60 * 24 * 365 if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
# Joining the browsers' preload list is a commitment a deployment opts into.
SECURE_HSTS_PRELOAD = HTTPS and env_bool("STUDIO_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
STUDIO_BEHIND_PROXY = env_bool("STUDIO_BEHIND_PROXY", False)
# How many proxies of ours append to X-Forwarded-For (one nginx: 1).
STUDIO_PROXY_COUNT = env_number("STUDIO_PROXY_COUNT", 1)
if STUDIO_BEHIND_PROXY:
    # The proxy terminates TLS and says so in this header.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = [o for o in env_str("DJANGO_CSRF_TRUSTED_ORIGINS").split(",") if o]
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Only our own static files and htmx (served from our static files too): no inline
# scripts or styles anywhere in the studio's pages. The Django admin keeps Django's own
# defaults; it is staff-only and uses inline bits of its own.
CONTENT_SECURITY_POLICY = {
    "EXCLUDE_URL_PREFIXES": ["/admin/"],
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
# Request bodies are refused by their Content-Length before they are read (413,
# studio.middleware): 3 MB for forms (a manuscript is at most 2 MB), 11 MB for file uploads
# (a reference picture is at most 10 MB, plus its form). Django's own caps stay as a second
# line: a form's text over 3 MB is a 400, and files over 3 MB are spooled to disk, never
# held in memory.
STUDIO_MAX_BODY_BYTES = 3 * 1024 * 1024
STUDIO_MAX_UPLOAD_BODY_BYTES = 11 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = STUDIO_MAX_BODY_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = 3 * 1024 * 1024
# Private files can be handed to the web server (nginx: X-Accel-Redirect, Apache:
# X-Sendfile) after the ownership check, instead of streaming them through Python.
STUDIO_SENDFILE_HEADER = env_str("STUDIO_SENDFILE_HEADER")
STUDIO_SENDFILE_PREFIX = env_str("STUDIO_SENDFILE_PREFIX", "/protected-media/")
if STUDIO_SENDFILE_HEADER not in {"", "X-Accel-Redirect", "X-Sendfile"}:
    raise ImproperlyConfigured("STUDIO_SENDFILE_HEADER must be X-Accel-Redirect or X-Sendfile")

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "var" / "static"

# Generated images are private: they are served by a view that checks ownership,
# never from a public MEDIA_URL listing.
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))
MEDIA_URL = "/media-not-public/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
STUDIO_MEDIA_STORAGE = env_str("STUDIO_MEDIA_STORAGE", "filesystem")


def s3_storage(*, bucket: str, endpoint_url: str, region: str) -> dict:
    """Return the STORAGES entry of an S3 bucket (the tests make theirs with it too)."""
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": endpoint_url or None,
            "region_name": region or None,
            "default_acl": "private",
            "querystring_auth": True,
            "file_overwrite": False,
            # A file read through the storage (an export copied out by export_project)
            # spills to a temporary file past this size instead of filling memory;
            # django-storages' default, 0, keeps every read whole in memory.
            "max_memory_size": 4 * 1024 * 1024,
        },
    }


if STUDIO_MEDIA_STORAGE == "s3":
    # Shared storage for many machines (pip install 'illustration-studio[s3]'); credentials
    # come from the usual AWS_* variables. Files stay private: the studio's views read
    # them through the storage and check ownership first.
    STORAGES["default"] = s3_storage(
        bucket=env_str("STUDIO_S3_BUCKET"),
        endpoint_url=env_str("STUDIO_S3_ENDPOINT_URL"),
        region=env_str("STUDIO_S3_REGION"),
    )
    if not STORAGES["default"]["OPTIONS"]["bucket_name"]:
        raise ImproperlyConfigured("STUDIO_MEDIA_STORAGE=s3 needs STUDIO_S3_BUCKET")
    if STUDIO_SENDFILE_HEADER == "X-Sendfile":
        # X-Sendfile hands the web server a local path, and a bucket has none.
        raise ImproperlyConfigured("STUDIO_SENDFILE_HEADER=X-Sendfile needs files on disk, not S3")
elif STUDIO_MEDIA_STORAGE != "filesystem":
    raise ImproperlyConfigured("STUDIO_MEDIA_STORAGE must be 'filesystem' or 's3'")

# --- Generation (names from shared/DESIGN.md) -------------------------------------------
IMAGE_PROVIDERS = ("embedded", "openai", "openai-chat", "gemini", "replicate", "fal")
STUDIO_IMAGE_PROVIDER = env_str("STUDIO_IMAGE_PROVIDER", "embedded")
if STUDIO_IMAGE_PROVIDER not in IMAGE_PROVIDERS:
    raise ImproperlyConfigured(
        f"STUDIO_IMAGE_PROVIDER must be one of {', '.join(IMAGE_PROVIDERS)}, "
        f"not {STUDIO_IMAGE_PROVIDER!r}"
    )
# The story phase: a text service writes pages from a premise. Empty means none is
# configured, and the premise path says so.
STUDIO_TEXT_PROVIDER = env_str("STUDIO_TEXT_PROVIDER")
if STUDIO_TEXT_PROVIDER not in {"", "openai"}:
    raise ImproperlyConfigured(
        f"STUDIO_TEXT_PROVIDER must be empty or 'openai', not {STUDIO_TEXT_PROVIDER!r}"
    )
STUDIO_TEXT_MODEL = env_str("STUDIO_TEXT_MODEL", "gpt-4o-mini")
# Scene clips: an animation of each page's illustration. "embedded" renders a pan and zoom
# offline; "replicate" speaks the Replicate predictions protocol (create, poll, download).
STUDIO_CLIP_PROVIDER = env_str("STUDIO_CLIP_PROVIDER", "embedded")
if STUDIO_CLIP_PROVIDER not in {"embedded", "replicate"}:
    raise ImproperlyConfigured("STUDIO_CLIP_PROVIDER must be 'embedded' or 'replicate'")
STUDIO_CLIP_MODEL = env_str("STUDIO_CLIP_MODEL", "minimax/video-01")
STUDIO_CLIP_SECONDS = env_number("STUDIO_CLIP_SECONDS", 3.0, float)
# How long one attempt polls an asynchronous clip job before the next attempt resumes it.
STUDIO_CLIP_POLL_SECONDS = env_number("STUDIO_CLIP_POLL_SECONDS", 900.0, float)
REPLICATE_API_TOKEN = env_str("REPLICATE_API_TOKEN")
REPLICATE_BASE_URL = env_str("REPLICATE_BASE_URL", "https://api.replicate.com/v1")
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL", "https://api.openai.com/v1").rstrip("/")
STUDIO_IMAGE_MODEL = env_str("STUDIO_IMAGE_MODEL", catalogue.default("openai"))
STUDIO_IMAGE_SIZE = env_str("STUDIO_IMAGE_SIZE", "1024x1024")
# The other image services (each used only when its key is set; see docs/services.md).
# Gemini, native: POST {GEMINI_BASE_URL}/models/{model}:generateContent.
GEMINI_API_KEY = env_str("GEMINI_API_KEY")
GEMINI_BASE_URL = env_str(
    "GEMINI_BASE_URL", "https://generativelanguage.googleapis.com/v1beta"
).rstrip("/")
GEMINI_IMAGE_MODEL = env_str("GEMINI_IMAGE_MODEL", catalogue.default("gemini"))
# OpenAI-compatible chat completions that answer with images (OpenRouter, the Lovable AI
# gateway at https://ai.gateway.lovable.dev/v1, others).
STUDIO_CHAT_IMAGE_BASE_URL = env_str(
    "STUDIO_CHAT_IMAGE_BASE_URL", "https://openrouter.ai/api/v1"
).rstrip("/")
STUDIO_CHAT_IMAGE_API_KEY = env_str("STUDIO_CHAT_IMAGE_API_KEY")
STUDIO_CHAT_IMAGE_MODEL = env_str("STUDIO_CHAT_IMAGE_MODEL", catalogue.default("openai-chat"))
# Replicate for pictures (REPLICATE_API_TOKEN and REPLICATE_BASE_URL are shared with clips).
STUDIO_REPLICATE_IMAGE_MODEL = env_str(
    "STUDIO_REPLICATE_IMAGE_MODEL", catalogue.default("replicate")
)
# The print export's upscale step (docs/printing.md): "" (none: the export offers the local
# resample only) or "replicate" (its REPLICATE_API_TOKEN): a paid call per page, so an
# operator turns it on; STUDIO_UPSCALE_MODEL defaults to the catalogue's upscaler.
STUDIO_UPSCALE_PROVIDER = env_str("STUDIO_UPSCALE_PROVIDER")
if STUDIO_UPSCALE_PROVIDER not in {"", "replicate"}:
    raise ImproperlyConfigured("STUDIO_UPSCALE_PROVIDER must be '' or 'replicate'")
STUDIO_UPSCALE_MODEL = env_str(
    "STUDIO_UPSCALE_MODEL", catalogue.default_upscaler(STUDIO_UPSCALE_PROVIDER or "replicate")
)
# The fal queue; FAL_PLATFORM_URL is only read by check_services (its free model lookup).
FAL_KEY = env_str("FAL_KEY")
FAL_QUEUE_URL = env_str("FAL_QUEUE_URL", "https://queue.fal.run").rstrip("/")
FAL_PLATFORM_URL = env_str("FAL_PLATFORM_URL", "https://api.fal.ai/v1").rstrip("/")
STUDIO_FAL_IMAGE_MODEL = env_str("STUDIO_FAL_IMAGE_MODEL", catalogue.default("fal"))
# Webhooks from the services that take long (Replicate, fal): with the studio's public URL
# set, a prediction or queued request is created with a webhook to
# {STUDIO_PUBLIC_URL}/webhooks/{replicate,fal}/ and the worker that created it is released
# at once, so a picture that takes a minute holds no worker. Each delivery is verified:
# Replicate's with its signing secret (whsec_…, GET /v1/webhooks/default/secret), fal's
# with the ED25519 keys of its published JWKS, copied here as JSON: the studio never
# fetches keys on its own. A service without its key set is polled as before.
STUDIO_PUBLIC_URL = env_str("STUDIO_PUBLIC_URL").rstrip("/")
REPLICATE_WEBHOOK_SECRET = env_str("REPLICATE_WEBHOOK_SECRET")
FAL_WEBHOOK_JWKS = env_str("FAL_WEBHOOK_JWKS")
# A job whose webhook has not come this long after its creation is polled by the sweep
# (then again after as long as the job has waited: backoff), so nothing waits forever.
STUDIO_WEBHOOK_OVERDUE = env_number("STUDIO_WEBHOOK_OVERDUE", 300.0, float)
# A key that cannot verify anything would refuse every delivery: said at start, not later.
if REPLICATE_WEBHOOK_SECRET and not REPLICATE_WEBHOOK_SECRET.startswith("whsec_"):
    raise ImproperlyConfigured("REPLICATE_WEBHOOK_SECRET must be Replicate's whsec_… secret")
if FAL_WEBHOOK_JWKS and not FAL_WEBHOOK_JWKS.lstrip().startswith("{"):
    raise ImproperlyConfigured("FAL_WEBHOOK_JWKS must be fal's JWKS, a JSON object")
# Pictures a service's answer points at are downloaded only over https from public
# addresses (or from the service's own configured origin): a hostile or confused answer must
# not turn a worker into a scanner of the studio's own network. A self-hosted service whose
# pictures live on a private address needs this on (it also allows plain http there).
STUDIO_ALLOW_PRIVATE_DOWNLOADS = env_bool("STUDIO_ALLOW_PRIVATE_DOWNLOADS", False)
STUDIO_MAX_ATTEMPTS = env_number("STUDIO_MAX_ATTEMPTS", 3)
# Exports take turns per editor: at most this many of one editor's exports run at once, the
# rest wait queued (holding no worker), so one editor's pile never delays another's export.
STUDIO_EXPORTS_PER_EDITOR = env_number("STUDIO_EXPORTS_PER_EDITOR", 2)
# The most projects one editor may own: one editor's pile never grows without end on a
# studio others share (creating one more is refused, saying so).
STUDIO_PROJECTS_PER_EDITOR = env_number("STUDIO_PROJECTS_PER_EDITOR", 500)
# A running export whose worker has said nothing for this long lost its worker: it reads as
# failed, with Retry (a worker writes its progress every few seconds of work).
STUDIO_EXPORT_STALE_MINUTES = env_number("STUDIO_EXPORT_STALE_MINUTES", 10, float)
# Reference pictures (characters, settings, props, the style reference) sent with one call,
# the page's own characters first.
STUDIO_MAX_REFERENCES = env_number("STUDIO_MAX_REFERENCES", 4)
STUDIO_BACKOFF_BASE = env_number("STUDIO_BACKOFF_BASE", 2.0, float)
STUDIO_BACKOFF_MAX = env_number("STUDIO_BACKOFF_MAX", 60.0, float)
# The whole of one call (connecting, waiting, reading, downloading the picture), not each read.
STUDIO_PROVIDER_TIMEOUT = env_number("STUDIO_PROVIDER_TIMEOUT", 120.0, float)
STUDIO_WORKERS = env_number("STUDIO_WORKERS", 4)
# Liveness: a worker that holds a job beats every this many seconds (while its call is in
# flight, between attempts, while it waits for a slot), and every live cluster runs the
# sweep that often. A job whose worker has been silent for three beats reads "Waiting for
# the worker" and goes back to the queue within 30 s of its last beat (at 5 s: 15 s of
# silence, then at most 1.6 beats until a cluster's sweep).
STUDIO_HEARTBEAT_SECONDS = env_number("STUDIO_HEARTBEAT_SECONDS", 5.0, float)
if STUDIO_HEARTBEAT_SECONDS <= 0:
    raise ImproperlyConfigured("STUDIO_HEARTBEAT_SECONDS must be more than 0")
# A claimed job's lease: how long its claim survives a silent worker. Three beats: a beat
# or two lost to a busy database costs nothing, and a dead worker's job is free again
# quickly. A call that outlasts it keeps its claim, since every beat renews it.
STUDIO_LEASE_SECONDS = env_number(
    "STUDIO_LEASE_SECONDS", max(1.0, 3 * STUDIO_HEARTBEAT_SECONDS), float
)
if STUDIO_LEASE_SECONDS < 1:
    raise ImproperlyConfigured("STUDIO_LEASE_SECONDS must be at least 1")
# Economy mode (generation.batches): the sweep looks at a batch this long after it was
# submitted, then twice as long each time, at most STUDIO_BATCH_POLL_MAX seconds apart: a
# batch takes hours, and each look is one request to the service.
STUDIO_BATCH_POLL_SECONDS = env_number("STUDIO_BATCH_POLL_SECONDS", 30.0, float)
STUDIO_BATCH_POLL_MAX = env_number("STUDIO_BATCH_POLL_MAX", 900.0, float)
# This many transient failures in a row, across pages, halt the run as an outage instead
# of burning every page's attempts.
STUDIO_OUTAGE_THRESHOLD = env_number("STUDIO_OUTAGE_THRESHOLD", 6)
# An outage heals itself: one real page is tried after 30 s, then 1, 2, 4, 8 minutes…, at
# most this many seconds apart.
STUDIO_OUTAGE_PROBE_MAX = env_number("STUDIO_OUTAGE_PROBE_MAX", 900.0, float)
# Rate limits are waiting, not failing: a page the service keeps answering 429 waits this
# long in all before it fails.
STUDIO_RATE_LIMIT_PATIENCE = env_number("STUDIO_RATE_LIMIT_PATIENCE", 1800.0, float)

# Speed control shared by every worker on every machine, per provider and model; empty
# means no limit beyond STUDIO_WORKERS per cluster. Projects can lower them.
STUDIO_PROVIDER_MAX_CONCURRENT = env_number("STUDIO_PROVIDER_MAX_CONCURRENT", 0) or None
STUDIO_PROVIDER_REQUESTS_PER_MINUTE = env_number("STUDIO_PROVIDER_REQUESTS_PER_MINUTE", 0) or None
# Prices in USD per image, by "provider:model:size", "provider:model" or "provider"; merged
# over the catalogue's list prices (generation/catalogue.toml), e.g. {"openai:gpt-image-2": 0.05}
try:
    STUDIO_PRICES = json.loads(env_str("STUDIO_PRICES", "{}"))
except json.JSONDecodeError as exc:
    raise ImproperlyConfigured(f"STUDIO_PRICES must be a JSON object: {exc}") from None

if STUDIO_MAX_ATTEMPTS < 1:
    raise ImproperlyConfigured("STUDIO_MAX_ATTEMPTS must be at least 1")

# --- Workers (django-q2) --------------------------------------------------------------
# One task runs one job: every attempt with the waits between them, and must never be
# killed mid-call. The longest attempt is a clip's: its create, its whole polling window
# and its download. The broker must never re-deliver a task that is still running, so
# retry > timeout; and our retries live in generation/, not in the queue (max_attempts=1,
# ack_failures).
LONGEST_ATTEMPT = max(
    STUDIO_PROVIDER_TIMEOUT, 2 * STUDIO_PROVIDER_TIMEOUT + STUDIO_CLIP_POLL_SECONDS
)
JOB_TIMEOUT = int(
    STUDIO_MAX_ATTEMPTS * (LONGEST_ATTEMPT + 30)
    + (STUDIO_MAX_ATTEMPTS - 1) * STUDIO_BACKOFF_MAX
    + 60
)
REDIS_URL = env_str("REDIS_URL")
Q_CLUSTER = {
    "name": env_str("STUDIO_QUEUE_NAME", "studio"),
    "workers": STUDIO_WORKERS,
    "timeout": JOB_TIMEOUT,
    "retry": JOB_TIMEOUT + 60,
    "max_attempts": 1,
    "ack_failures": True,
    # Successes are recorded in our own tables (GenerationAttempt); keeping django-q2's
    # copy costs queries on every task. Failures are always kept.
    "save_limit": -1,
    # Fetch one task ahead (the pusher holds one more): a killed cluster takes what it
    # fetched with it, and a cluster whose workers are all busy must not sit on tasks that
    # another cluster's idle workers could run (with 4 clusters × 8 workers and 8 tasks
    # ahead each, the last round's tasks were split unevenly: one more round of calls).
    "queue_limit": 1,
    "poll": 0.2,
    "catch_up": False,
    "label": "Workers",
}
# Every Redis client gives up quickly when Redis cannot be reached (a web host cut off
# from it still answers: docs/operating.md). redis-py waits forever by default. The broker's
# read timeout must outlast a worker's BLPOP, which waits 1 s for a task; the cache's calls
# are single small commands.
REDIS_CONNECT_TIMEOUT = 0.5
REDIS_BROKER_READ_TIMEOUT = 3.0
REDIS_CACHE_READ_TIMEOUT = 0.5


def _with_timeouts(url: str, read: float) -> str:
    """Return a Redis URL that asks redis-py for the connect and read timeouts."""
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}socket_connect_timeout={REDIS_CONNECT_TIMEOUT}&socket_timeout={read}"


if REDIS_URL:
    Q_CLUSTER["redis"] = _with_timeouts(REDIS_URL, REDIS_BROKER_READ_TIMEOUT)
else:
    Q_CLUSTER["orm"] = "default"
    # Clusters' heartbeats (django-q2's Stat) go to a Django cache on the ORM broker: one
    # every process reads, a table in the database (created by `migrate`), so the web
    # server can tell whether any worker is alive. On Redis the broker keeps them.
    Q_CLUSTER["cache"] = "cluster-stats"

# The default cache holds what the review page's polls share (studio.polls): every web
# worker must see it, so without Redis it is a directory the web workers of this machine
# share (STUDIO_CACHE_DIR). Several web servers need Redis.
CACHES = {
    "default": {
        "BACKEND": "studio.cache.FileCache",
        "LOCATION": env_str("STUDIO_CACHE_DIR", str(BASE_DIR / "var" / "cache")),
        # Each version of a drawing project leaves a header and an answer behind for 10 s
        # (removed once expired, studio.cache): Django's 300 would cull (at random) the
        # live ones of a dozen busy projects.
        "OPTIONS": {"MAX_ENTRIES": 5000},
    },
    "cluster-stats": {
        "BACKEND": "generation.workers.ClusterStatsCache",
        "LOCATION": "studio_cluster_stats",
    },
}

# Sessions: every review tab polls every 2 s, and a poll whose tab is up to date costs the
# session's lookup plus one indexed query. Where every web server reads the same cache,
# sessions are read from it (written through to the database), so such a poll costs that
# one query: with Redis, and with SQLite, whose web servers are all on its one machine and
# share its cache directory. PostgreSQL without Redis keeps them in the database only: a
# cache on one machine's disk would let a session signed out on one web server live on in
# another.
if REDIS_URL:
    CACHES["default"] = {
        # Reads miss and writes are dropped while Redis is unreachable (studio.cache).
        "BACKEND": "studio.cache.FailSoftRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "studio-cache",
        "OPTIONS": {
            "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
            "socket_timeout": REDIS_CACHE_READ_TIMEOUT,
        },
    }
if REDIS_URL or DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    SESSION_ENGINE = "studio.cached_db"  # Django's, deleting from the cache first

# --- Word when a run ends ----------------------------------------------------------------
# One email to the run's owner when it finishes, halts or leaves failed pages (editors can
# switch it off in their settings). Development prints it on the console; production sends
# it through SMTP with Django's EMAIL_* settings.
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_number("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_number("EMAIL_TIMEOUT", 10)  # a worker never hangs on a mail server
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH") or None  # for the file-based backend
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Illustration Studio <studio@localhost>")
# Where editors open the studio: the links in emails and webhooks start with it.
STUDIO_BASE_URL = env_str("STUDIO_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
# For teams: the same word as JSON, POSTed by the workers (a django-q2 task, retried with
# exponential backoff), signed with HMAC-SHA256 of the body under STUDIO_WEBHOOK_SECRET in
# the X-Studio-Signature header ("sha256=<hex>"). Off when the URL is unset.
STUDIO_WEBHOOK_URL = env_str("STUDIO_WEBHOOK_URL")
STUDIO_WEBHOOK_SECRET = env_str("STUDIO_WEBHOOK_SECRET")
STUDIO_WEBHOOK_ATTEMPTS = env_number("STUDIO_WEBHOOK_ATTEMPTS", 5)
STUDIO_WEBHOOK_BACKOFF = env_number("STUDIO_WEBHOOK_BACKOFF", 2.0, float)  # seconds, doubling
if STUDIO_WEBHOOK_URL and not STUDIO_WEBHOOK_SECRET:
    raise ImproperlyConfigured("STUDIO_WEBHOOK_URL is set: set STUDIO_WEBHOOK_SECRET too")

# --- Operations ------------------------------------------------------------------------
# /metrics answers only with this bearer token, and not at all when it is unset.
STUDIO_METRICS_TOKEN = env_str("STUDIO_METRICS_TOKEN")
# One line per call and per run state change: readable text, or JSON for a log pipeline.
STUDIO_LOG_FORMAT = env_str("STUDIO_LOG_FORMAT", "text")
if STUDIO_LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(
        f"STUDIO_LOG_FORMAT must be 'text' or 'json', not {STUDIO_LOG_FORMAT!r}"
    )
# Prompts are the editors' words: kept out of the logs unless an operator asks.
STUDIO_LOG_PROMPTS = env_bool("STUDIO_LOG_PROMPTS", False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        # Every `extra` field of a record becomes a key (generation.logs puts the facts
        # there), beside the time, level, logger and message.
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "filters": {"redact": {"()": "generation.logs.RedactSecrets"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": STUDIO_LOG_FORMAT,
            "filters": ["redact"],
        }
    },
    "loggers": {
        "generation": {"handlers": ["console"], "level": env_str("STUDIO_LOG_LEVEL", "INFO")},
    },
}
