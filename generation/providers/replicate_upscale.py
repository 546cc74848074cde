"""The print export's upscale step on Replicate (nightmareai/real-esrgan by default): one
prediction per page picture, in the shape of Replicate's pictures (create → prediction id,
stored before the first poll; wait → the downloaded picture; cancel).

The picture goes as a data URL in the model's `image` input (kept under 1 MB, as Replicate
recommends for data URLs: a PNG that is larger is sent as a JPEG, at quality 95 down to 85),
the scale in its `scale` input. A community model runs by version: POST /v1/predictions with
"owner/name:version" (generation/catalogue.toml names the version).
"""

import base64
import io
import re

from django.conf import settings
from PIL import Image

from .. import catalogue
from .base import ConfigError, ProviderError, Rejected, UpscaleRequest
from .http import as_json
from .replicate_image import ReplicateImageProvider
from .replicate_image import classify as classify_picture
from .webhooks import webhook_url

SERVICE = "the upscale service (Replicate)"
MODEL_SETTING = "STUDIO_UPSCALE_MODEL"
DATA_URL_BYTES = 1024 * 1024
# An upscaled picture is large: a 1,536 px page ×4 is 6,144 px on a side (a PNG of tens of MB).
DOWNLOAD_BYTES = 96 * 1024 * 1024


def classify(status: int, headers, body: object) -> ProviderError:
    """Return the error class of an answer to an upscale: a model or version the service
    does not know names STUDIO_UPSCALE_MODEL; a picture it cannot take fails that page
    alone; a scale it refuses is configuration. The rest is as for pictures."""
    payload = as_json(body)
    payload = payload if isinstance(payload, dict) else {}
    detail = str(payload.get("detail") or payload.get("title") or f"HTTP {status}")
    details = {"http_status": status, "code": str(payload.get("title") or "")[:80]}
    if status == 404 and payload:
        return ConfigError(detail, setting=MODEL_SETTING, **details)
    if status == 422:
        if re.search(r"input\.image\b|image is required", detail):
            return Rejected(f"Replicate could not take this picture: {detail}", **details)
        if re.search(r"input\.scale\b|version", detail):
            return ConfigError(detail, setting=MODEL_SETTING, **details)
    return classify_picture(status, headers, body)


def as_data_url(content: bytes, *, limit: int = DATA_URL_BYTES) -> str:
    """Return the picture as a data URL: as stored when it is a PNG, JPEG or WebP under
    `limit`, else re-encoded as a JPEG (the same pixels), at quality 95 or, while that is
    still over `limit`, 90 then 85."""
    with Image.open(io.BytesIO(content)) as image:
        kind = (image.format or "").lower()
        if kind in ("png", "jpeg", "webp") and len(content) <= limit:
            mime = f"image/{kind}"
        else:
            rgb, mime = image.convert("RGB"), "image/jpeg"
            for quality in (95, 90, 85):
                buffer = io.BytesIO()
                rgb.save(buffer, format="JPEG", quality=quality)
                content = buffer.getvalue()
                if len(content) <= limit:
                    break
    return f"data:{mime};base64," + base64.b64encode(content).decode()


class ReplicateUpscaleProvider(ReplicateImageProvider):
    service = SERVICE
    label = "Replicate"
    model_setting = MODEL_SETTING
    classify = staticmethod(classify)
    download_limit = DOWNLOAD_BYTES

    def __init__(self):
        super().__init__()
        # What the service is asked for ("owner/name:version" for a community model) and
        # the model's name, which the journal, the ledger and the report record (a model
        # column holds 80 characters; the version is the catalogue's).
        self.asked = settings.STUDIO_UPSCALE_MODEL
        self.model = catalogue.canonical(self.name, self.asked)
        self.webhook = webhook_url(self.name, self.model)

    def create_path(self, inputs: dict) -> tuple[str, dict]:
        """Return the path and body of the prediction: a model named with its version runs
        by version on /predictions; an official model by name."""
        path, body = super().create_path(inputs)
        if ":" in self.asked:
            body.pop("version", None)
            return "/predictions", {"version": self.asked, **body}
        return path, body

    @property
    def upscaler(self) -> catalogue.Upscaler:
        return catalogue.upscaler(self.name, self.model)

    @property
    def scale(self) -> int:
        """The scale the studio asks for: the catalogue's (4 for Real-ESRGAN)."""
        return self.upscaler.scale

    def inputs(self, request: UpscaleRequest) -> dict:
        upscaler = self.upscaler
        return {
            upscaler.input: as_data_url(request.image),
            upscaler.scale_input: request.scale,
        }
