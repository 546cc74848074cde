"""Small previews of illustrations, made once on first request and kept beside the image."""

import io

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

THUMBNAIL_SIZE = (480, 480)


def thumbnail_name(image_name: str) -> str:
    return f"{image_name.rsplit('.', 1)[0]}.thumb.webp"


def ensure_thumbnail(image) -> str:
    """Return the stored name of the image's thumbnail, making it first if needed."""
    name = thumbnail_name(image.name)
    if not default_storage.exists(name):
        with image.open("rb") as source, Image.open(source) as picture:
            picture.thumbnail(THUMBNAIL_SIZE)
            buffer = io.BytesIO()
            picture.convert("RGB").save(buffer, format="WEBP", quality=82)
        default_storage.save(name, ContentFile(buffer.getvalue()))
    return name
