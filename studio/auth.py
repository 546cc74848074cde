"""Who is signing in: the client's address as sign-in throttling (django-axes) counts it."""

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    """Return the client's address: REMOTE_ADDR, or behind STUDIO_BEHIND_PROXY the address
    our proxy appended to X-Forwarded-For (STUDIO_PROXY_COUNT from the right). Entries to its
    left come from the client and can be forged, so they are never used."""
    remote = request.META.get("REMOTE_ADDR", "")
    if not settings.STUDIO_BEHIND_PROXY:
        return remote
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    hops = [hop for hop in hops if hop]
    count = max(settings.STUDIO_PROXY_COUNT, 1)
    return hops[-count] if len(hops) >= count else remote
