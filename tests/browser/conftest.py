"""Browser tests: Playwright driving Debian's Chromium against a real web server subprocess,
real qcluster workers and the loopback fake image service, all on the test database."""

import os
import shutil
import signal
import subprocess
import sys

import pytest
import requests
from playwright.sync_api import Error as PlaywrightError

from tests.conftest import ARTIFACTS, ROOT, stop_process_group, wait_until, worker_env

# Playwright's sync API runs an event loop in this thread; the tests still read the
# database directly, which Django would otherwise refuse next to a running loop.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def pytest_collection_modifyitems(config, items):
    if shutil.which(CHROMIUM) or os.path.exists(CHROMIUM):
        return
    if os.environ.get("STUDIO_REQUIRE_BROWSER"):
        raise pytest.UsageError(f"{CHROMIUM} is missing but STUDIO_REQUIRE_BROWSER is set")
    skip = pytest.mark.skip(
        reason=f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    )
    for item in items:
        if "browser" in str(item.fspath):
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


class WebServer:
    """`manage.py runserver` on a fixed port, so it can be stopped and started again."""

    def __init__(self, port: int, env: dict):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self) -> "WebServer":
        ARTIFACTS.mkdir(exist_ok=True)
        log = open(ARTIFACTS / f"web-{self.port}.log", "a")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "runserver",
                "--noreload",
                "--insecure",
                f"127.0.0.1:{self.port}",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._answers, timeout=30, message="the web server did not start")
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)
            self.process = None

    def _answers(self) -> bool:
        try:
            return requests.get(f"{self.url}/accounts/login/", timeout=1).status_code == 200
        except requests.RequestException:
            return False


@pytest.fixture
def web_server(transactional_db):
    from tests.test_runstudio import free_port

    servers = []

    def start(**env) -> WebServer:
        server = WebServer(free_port(), worker_env(**env)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems = []
    page.on(
        "console",
        lambda message: (
            problems.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    yield page
    # Nothing our pages do may trip the Content-Security-Policy or throw.
    assert problems == []
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)
    context.close()


def screenshot(page, name: str) -> None:
    """Save a picture of the page among the artifacts, for a reader. Headless Chromium now
    and then answers "Unable to capture screenshot" while it composites a frame (CI's
    PostgreSQL pass, once): it is asked once more after the next frame."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = str(ARTIFACTS / f"{name}.png")
    try:
        page.screenshot(path=path, full_page=False)
    except PlaywrightError as error:
        if "Unable to capture screenshot" not in str(error):
            raise
        page.evaluate("() => new Promise(requestAnimationFrame)")
        page.screenshot(path=path, full_page=False)


def sign_in(page, server, *, username="alice", password="alice-password", next_url="/"):
    page.goto(f"{server.url}/accounts/login/?next={next_url}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


__all__ = ["screenshot", "sign_in", "signal"]


def card_action(card, role: str, name: str):
    """Return one of a card's actions, opening the card's "More" menu first when the action
    lives there (a sent action closes it; a poll's swap of the card keeps it open). A poll
    that swaps the card between the press and the release of the click on "More" loses
    that click, as it would a person's: the menu is opened again until the action shows."""
    menu = card.locator("details.card-menu")
    action = card.get_by_role(role, name=name, exact=True)

    def shown():
        # Asked again each time: a poll may be swapping the card in (for a moment without
        # the action, or with its menu closed).
        if action.is_visible():
            return True
        in_menu = menu.get_by_role(role, name=name, exact=True, include_hidden=True)
        if in_menu.count() and menu.get_attribute("open") is None:
            menu.locator("summary").click()
        return action.is_visible()

    wait_until(shown, timeout=15, message=f"the card never showed {name!r}")
    return action
