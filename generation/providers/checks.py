"""Free look-ups that tell whether a service accepts its key and knows its model, for
`manage.py check_services`: never a call that makes (or bills) a picture."""

from collections.abc import Callable
from dataclasses import dataclass

from .base import AuthFailed, ConfigError, OutOfCredits, ProviderError
from .http import Client

ACCEPTED = "accepted"
REFUSED = "refused"
NOT_CHECKED = "not checked"
UNKNOWN = "unknown"  # the look-up itself failed (unreachable, 5xx): nothing learned


@dataclass(frozen=True)
class Check:
    what: str  # "key" or "model"
    state: str  # ACCEPTED, REFUSED, NOT_CHECKED or UNKNOWN
    detail: str = ""


def not_checked(what: str, why: str) -> Check:
    return Check(what, NOT_CHECKED, why)


def model_after_key(key: list[Check], model: Callable[[], list[Check]]) -> list[Check]:
    """Return the key's checks and then the model's: `model()` looks it up only when the
    key was not refused (a refused key says nothing of the model)."""
    if key[0].state == REFUSED:
        return [*key, not_checked("model", "the key was refused")]
    return key + model()


def check_get(
    client: Client,
    url: str,
    *,
    what: tuple[str, ...],
    classify,
    headers: Callable[[], dict] | dict | None = None,
    params: dict | None = None,
    found: Callable[[object], bool] | None = None,
) -> list[Check]:
    """GET url and return one Check for each of `what` ("key", "model"): a 2xx accepts
    them (a model must also be `found` in the answer, when given), a refused key refuses
    the key, a 404 or unknown model refuses the model."""
    try:
        sent = headers() if callable(headers) else headers
        answer = client.send("GET", url, deadline=client.deadline(), headers=sent, params=params)
        client.raise_for(answer, classify)
    except (AuthFailed, OutOfCredits) as error:
        if what[0] == "key":
            rest = [not_checked(w, "the key was refused") for w in what[1:]]
            return [Check("key", REFUSED, error.message), *rest]
        return [Check(w, REFUSED, error.message) for w in what]
    except ConfigError as error:
        if what == ("key",):
            return [not_checked("key", f"no key look-up at this endpoint ({error.message})")]
        return [
            Check(w, REFUSED if w == "model" else ACCEPTED, error.message if w == "model" else "")
            for w in what
        ]
    except ProviderError as error:
        return [Check(w, UNKNOWN, error.message) for w in what]
    checks = []
    for w in what:
        if w == "model" and found is not None and not found(answer.payload):
            checks.append(Check(w, REFUSED, "the service does not list this model"))
        else:
            checks.append(Check(w, ACCEPTED))
    return checks
