"""The offline clip renderer: a slow pan and zoom over the page's illustration, as an
animated WebP a few seconds long that plays inline in any browser."""

import io

from PIL import Image

from .base import ClipRequest, GeneratedClip

FRAMES_PER_SECOND = 12
SIDE = 480


class EmbeddedClipProvider:
    name = "embedded"
    model = "embedded-pan-zoom-1"
    asynchronous = False

    def render(self, request: ClipRequest) -> GeneratedClip:
        with Image.open(io.BytesIO(request.image)) as source:
            picture = source.convert("RGB")
        frames = pan_and_zoom(picture, int(request.seconds * FRAMES_PER_SECOND))
        buffer = io.BytesIO()
        frames[0].save(
            buffer,
            format="WEBP",
            save_all=True,
            append_images=frames[1:],
            duration=int(1000 / FRAMES_PER_SECOND),
            loop=0,
            quality=70,
            method=2,
        )
        return GeneratedClip(content=buffer.getvalue(), content_type="image/webp", model=self.model)


def pan_and_zoom(picture: Image.Image, count: int) -> list[Image.Image]:
    """Return frames moving from the whole picture to a 25% closer view of its centre right."""
    width, height = picture.size
    frames = []
    for n in range(max(2, count)):
        t = n / max(1, count - 1)
        eased = t * t * (3 - 2 * t)  # smoothstep: starts and ends gently
        zoom = 1 + 0.25 * eased
        crop_w, crop_h = width / zoom, height / zoom
        left = (width - crop_w) * (0.5 + 0.3 * eased)
        top = (height - crop_h) * 0.5
        box = (left, top, left + crop_w, top + crop_h)
        frames.append(picture.resize((SIDE, SIDE), Image.Resampling.BILINEAR, box=box))
    return frames
