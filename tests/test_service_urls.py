"""A service's URLs are not followed blindly (issue 30, item 3): keys go only to the
configured service's origin, and the pictures an answer points at are fetched only over
https from public addresses, or from the service's own origin, each redirect checked again.
Over real HTTP: the loopback fakes, and a second loopback server ("elsewhere") on another
port that records whatever reaches it."""

import pytest

from generation.fakes.base import FakeHandler, LoopbackServer
from generation.fakes.openai import png_bytes
from generation.providers.base import ConfigError, ImageRequest
from generation.providers.fal import FalProvider
from generation.providers.http import check_download_url
from generation.providers.openai import OpenAIProvider
from generation.providers.openai_chat import ChatImageProvider
from generation.providers.replicate_image import ReplicateImageProvider
from tests.conftest import FAL_TEST_KEY

REQUEST = ImageRequest(prompt="A fox", size="1024x1024", seed=7, idempotency_key="studio-7-1")


class Elsewhere(LoopbackServer):
    """Another host's server: answers every request with a picture, records its headers."""

    class Handler(FakeHandler):
        def _any(self):
            self.read_body()
            self.service.record({"path": self.path, "headers": dict(self.headers)})
            self.send_bytes(200, png_bytes(), "image/png")

        do_GET = do_PUT = do_POST = _any


@pytest.fixture
def elsewhere():
    server = Elsewhere().start()
    yield server
    server.stop()


def port_of(server) -> int:
    return server.server.server_port


# --- fal: the key goes only to FAL_QUEUE_URL's origin ------------------------------------------


def test_fal_status_response_and_cancel_urls_off_the_queue_origin_never_get_the_key(
    fal_settings, fake_fal, elsewhere
):
    fake_fal.links = elsewhere.origin  # the submit answer names URLs on another host
    provider = FalProvider()
    request_id = provider.create(REQUEST)
    assert provider.cancel(request_id) == "CANCELLATION_REQUESTED"
    assert fake_fal.canceled == [request_id]  # the documented URL on the queue's origin

    second = provider.create(REQUEST)
    with pytest.raises(ConfigError) as refused:
        provider.wait(second, sleep=lambda s: None)
    assert fake_fal.polls[second] == 5  # polled where the key belongs
    assert "a loopback address" in refused.value.message  # its picture URL is elsewhere
    assert elsewhere.calls == []  # nothing, and so no key, ever reached the other host
    assert FAL_TEST_KEY not in refused.value.message


# --- picture downloads -----------------------------------------------------------------------


@pytest.fixture
def openai(openai_settings, fake_openai):
    fake_openai.default = "ok_url"
    return OpenAIProvider()


@pytest.mark.parametrize(
    ("links", "address"),
    [
        ("http://127.0.0.1:{port}", "a loopback address (127.0.0.1)"),
        ("http://0.0.0.0:{port}", "an unspecified address (0.0.0.0)"),
        ("http://2130706433:{port}", "a loopback address (127.0.0.1)"),  # 127.0.0.1, decimal
        ("http://localhost:{port}", "a loopback address"),
    ],
)
def test_a_picture_url_on_a_private_address_is_refused_as_paid_naming_the_rule(
    openai, fake_openai, elsewhere, links, address
):
    fake_openai.links = links.format(port=port_of(elsewhere))
    with pytest.raises(ConfigError) as refused:
        openai.generate(REQUEST)
    error = refused.value
    assert address in error.message
    assert "pictures come only from public addresses or the service's own URL" in error.message
    assert error.setting == "STUDIO_ALLOW_PRIVATE_DOWNLOADS"
    assert (error.maybe_paid, error.code, error.halts_run) == (True, "refused_url", True)
    assert elsewhere.calls == []


def test_a_redirect_from_the_service_to_a_private_address_is_refused_at_that_hop(
    openai, fake_openai, elsewhere
):
    fake_openai.redirect_files_to = elsewhere.origin
    with pytest.raises(ConfigError) as refused:
        openai.generate(REQUEST)
    assert "a loopback address (127.0.0.1)" in refused.value.message
    assert refused.value.maybe_paid is True
    assert elsewhere.calls == []


def test_redirects_are_followed_a_few_hops_at_most(openai, fake_openai):
    fake_openai.redirect_files_to = fake_openai.origin  # the service's own origin, for ever
    with pytest.raises(ConfigError) as refused:
        openai.generate(REQUEST)
    assert "redirected more than 3 times" in refused.value.message


def test_the_services_own_origin_is_allowed_over_plain_http(openai, fake_openai):
    assert openai.generate(REQUEST).width == 64  # http://127.0.0.1:<the fake's port>


def test_private_downloads_are_allowed_by_the_setting_and_never_carry_the_key(
    openai_settings, openai, fake_openai, elsewhere
):
    openai_settings.STUDIO_ALLOW_PRIVATE_DOWNLOADS = True
    fake_openai.links = elsewhere.origin
    assert openai.generate(REQUEST).width == 64
    [call] = elsewhere.calls
    assert "Authorization" not in call["headers"]


def test_replicate_and_chat_gateway_picture_urls_follow_the_same_rules(
    replicate_image_settings, fake_predictions, chat_image_settings, fake_chat_images, elsewhere
):
    fake_predictions.links = fake_chat_images.links = elsewhere.origin
    with pytest.raises(ConfigError, match="a loopback address"):
        ReplicateImageProvider().generate(REQUEST, sleep=lambda s: None)
    fake_chat_images.default = "ok_url"
    with pytest.raises(ConfigError, match="a loopback address"):
        ChatImageProvider().generate(REQUEST)
    assert elsewhere.calls == []


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://93.184.216.34/a.png", "come only over https"),
        ("ftp://93.184.216.34/a.png", "not an http(s) URL"),
        ("file:///etc/passwd", "not an http(s) URL"),
        ("https://[::1]/a.png", "a loopback address (::1)"),
        ("https://[::ffff:127.0.0.1]/a.png", "a loopback address"),
        ("https://169.254.169.254/latest/meta-data", "a link-local address (169.254.169.254)"),
        ("https://10.1.2.3/a.png", "a private address (10.1.2.3)"),
        ("https://224.0.0.1/a.png", "a multicast address (224.0.0.1)"),
        ("https://240.0.0.1/a.png", "a reserved address (240.0.0.1)"),
    ],
)
def test_each_rule_refuses_what_it_names(settings, url, rule):
    settings.STUDIO_ALLOW_PRIVATE_DOWNLOADS = False
    with pytest.raises(ConfigError) as refused:
        check_download_url(url, service_url="https://api.openai.com/v1")
    assert rule in refused.value.message


def test_a_public_https_address_passes_the_check(settings):
    settings.STUDIO_ALLOW_PRIVATE_DOWNLOADS = False
    check_download_url("https://93.184.216.34/a.png", service_url="https://api.openai.com/v1")
