"""Stored files answered to a browser: the studio's pictures, clips and exports."""

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse, HttpResponse


def private_file(name: str, content_type: str) -> HttpResponse:
    """Answer with a stored file the caller has already checked access to.

    With STUDIO_SENDFILE_HEADER set, the web server sends the file (nginx X-Accel-Redirect
    to an internal location, or Apache X-Sendfile); otherwise Django streams it.
    """
    header = settings.STUDIO_SENDFILE_HEADER
    if header == "X-Accel-Redirect":
        response = HttpResponse(content_type=content_type)
        response[header] = settings.STUDIO_SENDFILE_PREFIX.rstrip("/") + "/" + name
    elif header == "X-Sendfile":
        response = HttpResponse(content_type=content_type)
        response[header] = default_storage.path(name)
    else:
        response = FileResponse(default_storage.open(name, "rb"), content_type=content_type)
    response["Cache-Control"] = "private, max-age=86400"
    return response
