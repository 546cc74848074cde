"""The editor's own settings."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from ..forms import EditorSettingsForm
from ..models import EditorSettings


@login_required
@require_http_methods(["GET", "POST"])
def editor_settings(request: HttpRequest) -> HttpResponse:
    """The editor's settings: their email address, and whether a run's end is emailed."""
    # An unticked box sends nothing: an empty POST is still a submitted form.
    data = request.POST if request.method == "POST" else None
    form = EditorSettingsForm(data, instance=EditorSettings.of(request.user))
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Settings saved.")
        return redirect("editor-settings")
    status = 422 if request.method == "POST" else 200
    return render(request, "studio/editor_settings.html", {"form": form}, status=status)
