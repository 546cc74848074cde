"""The catalogue of image models (catalogue.toml, read once): what each service's models
cost, which sizes and how many reference pictures they take, whether they run in a batch
or call back with a webhook, and when they are shut down and what replaces them.

The small stable API others use:

    catalogue.model("gemini", "gemini-2.5-flash-image")  # -> Model (.batch, .webhooks,
                                                         #    .shutdown, .replacement, …)
    catalogue.default("gemini")                          # -> "gemini-3.1-flash-image"

A model the catalogue does not list is still a Model (known=False, no batch, no webhooks,
no shutdown), so callers never test for None. Nothing here imports Django: the settings
read their defaults from it.
"""

import tomllib
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path

PATH = Path(__file__).with_name("catalogue.toml")
# A model this close to its shutdown is shown with a warning (settings, review header,
# check_services).
WARN_DAYS = 30
QUALITY = "medium"  # what the studio's estimates assume (the services' default is near it)

CURRENT = "current"
RETIRING = "retiring"  # within WARN_DAYS of its shutdown
RETIRED = "retired"  # past its shutdown: refused before any call

# The facts a model states, each with its source: its own (`sources` under the model) or,
# for a fact one page states for a whole service, the service's (`[<service>.sources]`).
FACTS = (
    "sizes",
    "references",
    "batch",
    "webhooks",
    "released",
    "shutdown",
    "replacement",
    "prices",
    "tokens",
)


@dataclass(frozen=True)
class Model:
    service: str
    name: str
    known: bool = True
    released: str = ""  # "YYYY-MM-DD" or "YYYY-MM"; "" when not published
    shutdown: date | None = None
    replacement: str = ""
    batch: bool = False
    webhooks: bool = False
    references: int = 0  # the most reference pictures one call takes
    references_how: str = "none"  # edits | inline | urls | sheet | none
    input: str = ""  # the input that takes them (Replicate, fal)
    text_model: str = ""  # fal: the sibling that draws from the prompt alone
    size_input: str = ""  # fal: "image_size" (width and height) or "" (aspect_ratio)
    ratios: tuple[str, ...] = ()
    input_fidelity: bool = False
    response_format: str = ""  # asked for explicitly (dall-e answers a URL unless told)
    sizes: str = "ratio"  # fixed | multiple | ratio
    fixed: tuple[str, ...] = ()
    multiple: int = 1
    max_edge: int = 0
    max_ratio: float = 0
    min_pixels: int = 0
    max_pixels: int = 0
    prices: dict = field(default_factory=dict)  # quality -> size ("any") -> Decimal
    tokens: dict | None = None  # text_input, image_input, output: USD per million
    sources: dict = field(default_factory=dict)  # fact -> where it was read (own or inherited)

    def stated(self) -> tuple[str, ...]:
        """Return the facts this model states (released, shutdown, replacement, prices and
        tokens only when it has them)."""
        optional = {
            "released": self.released,
            "shutdown": self.shutdown,
            "replacement": self.replacement,
            "prices": self.prices,
            "tokens": self.tokens,
        }
        return tuple(fact for fact in FACTS if optional.get(fact, True))

    def unsourced(self) -> list[str]:
        """Return the facts this model states with no source, its own or its service's."""
        return [fact for fact in self.stated() if not self.sources.get(fact)]

    def price(self, size: str, quality: str = QUALITY) -> Decimal | None:
        """Return the list price of one picture at size and quality; None if unknown."""
        table = self.prices.get(quality) or (
            next(iter(self.prices.values())) if len(self.prices) == 1 else {}
        )
        value = table.get(size, table.get("any"))
        return None if value is None else Decimal(value)

    def state(self, today: date) -> str:
        """Return CURRENT, RETIRING (within WARN_DAYS of its shutdown) or RETIRED."""
        if self.shutdown is None:
            return CURRENT
        if today >= self.shutdown:
            return RETIRED
        if today >= self.shutdown - timedelta(days=WARN_DAYS):
            return RETIRING
        return CURRENT

    def notice(self, today: date) -> str:
        """Return what an editor or operator is told of the model's end ("" when current)."""
        state = self.state(today)
        if state == CURRENT:
            return ""
        instead = f" Use {self.replacement} instead." if self.replacement else ""
        if state == RETIRED:
            return (
                f"{self.name} was shut down by the service on {self.shutdown:%Y-%m-%d}: the "
                f"studio no longer calls it.{instead}"
            )
        days = (self.shutdown - today).days
        return (
            f"{self.name} will be shut down on {self.shutdown:%Y-%m-%d} "
            f"(in {days} day{'s' if days != 1 else ''}).{instead}"
        )

    def size_problem(self, size: str) -> str:
        """Return the rule a "WxH" size breaks for this model, as a sentence ("" if none)."""
        if self.sizes == "fixed":
            if size in self.fixed:
                return ""
            return f"{self.name} takes only these sizes: {', '.join(self.fixed)}."
        try:
            width, _, height = size.lower().partition("x")
            w, h = int(width), int(height)
        except ValueError:
            return f"A size is written WIDTHxHEIGHT in pixels, e.g. 1024x1024 (not {size!r})."
        if w <= 0 or h <= 0:
            return "Both sides of a size must be more than 0 pixels."
        if self.sizes != "multiple":
            return ""
        rules = []
        if self.multiple > 1 and (w % self.multiple or h % self.multiple):
            rules.append(f"both sides a multiple of {self.multiple}")
        if self.max_edge and max(w, h) > self.max_edge:
            rules.append(f"no side over {self.max_edge:,} px")
        if self.max_ratio and max(w, h) > self.max_ratio * min(w, h):
            rules.append(f"the long side at most {self.max_ratio:g} times the short one")
        if self.min_pixels and w * h < self.min_pixels:
            rules.append(f"at least {self.min_pixels:,} pixels in all")
        if self.max_pixels and w * h > self.max_pixels:
            rules.append(f"at most {self.max_pixels:,} pixels in all")
        if not rules:
            return ""
        return f"{self.name} takes {size} only with " + "; ".join(rules) + "."


@dataclass(frozen=True)
class Upscaler:
    """A super-resolution model a service runs on one picture (the print export's upscale
    step): the input that takes the picture, the input that takes the scale, the scale the
    studio asks for, and the price of one call."""

    service: str
    name: str  # "owner/name", as the catalogue lists it
    known: bool = True
    version: str = ""  # a community model runs by version: "owner/name:version"
    input: str = "image"
    scale_input: str = "scale"
    scale: int = 4
    max_scale: int = 4
    price: Decimal | None = None  # USD per call
    sources: dict = field(default_factory=dict)

    @property
    def reference(self) -> str:
        """Return how the service is asked for it: "owner/name:version", or the name."""
        return f"{self.name}:{self.version}" if self.version else self.name


@dataclass(frozen=True)
class Service:
    name: str
    label: str
    default: str
    default_why: str
    models: dict  # name -> Model
    upscalers: dict = field(default_factory=dict)  # name -> Upscaler
    upscaler: str = ""  # the one the studio uses unless STUDIO_UPSCALE_MODEL names another
    sources: dict = field(default_factory=dict)  # fact -> source, for each of its models


def _model(service: str, name: str, data: dict, inherited: dict) -> Model:
    """Build a Model; its sources are its own, over those its service states for every
    model (`inherited`, without the service's note)."""
    shutdown = data.get("shutdown")
    prices = {
        quality: {size: Decimal(str(value)) for size, value in table.items()}
        for quality, table in (data.get("prices") or {}).items()
    }
    return Model(
        service=service,
        name=name,
        released=str(data.get("released", "")),
        shutdown=date.fromisoformat(shutdown) if shutdown else None,
        replacement=data.get("replacement", ""),
        batch=bool(data.get("batch", False)),
        webhooks=bool(data.get("webhooks", False)),
        references=int(data.get("references", 0)),
        references_how=data.get("references_how", "none"),
        input=data.get("input", ""),
        text_model=data.get("text_model", ""),
        size_input=data.get("size_input", ""),
        ratios=tuple(data.get("ratios", ())),
        input_fidelity=bool(data.get("input_fidelity", False)),
        response_format=data.get("response_format", ""),
        sizes=data.get("sizes", "ratio"),
        fixed=tuple(data.get("fixed", ())),
        multiple=int(data.get("multiple", 1)),
        max_edge=int(data.get("max_edge", 0)),
        max_ratio=float(data.get("max_ratio", 0)),
        min_pixels=int(data.get("min_pixels", 0)),
        max_pixels=int(data.get("max_pixels", 0)),
        prices=prices,
        tokens=data.get("tokens"),
        sources={
            **{fact: source for fact, source in inherited.items() if fact != "note"},
            **data.get("sources", {}),
        },
    )


@cache
def services() -> dict[str, Service]:
    """Return every service of the catalogue by name (the file is read once)."""
    with PATH.open("rb") as file:
        data = tomllib.load(file)
    return {
        name: Service(
            name=name,
            label=entry["label"],
            default=entry.get("default", ""),
            default_why=entry.get("default_why", ""),
            models={
                model: _model(name, model, fields, entry.get("sources") or {})
                for model, fields in (entry.get("models") or {}).items()
            },
            upscalers={
                model: _upscaler(name, model, fields)
                for model, fields in (entry.get("upscalers") or {}).items()
            },
            upscaler=entry.get("upscaler", ""),
            sources=dict(entry.get("sources") or {}),
        )
        for name, entry in data.items()
    }


def _upscaler(service: str, name: str, data: dict) -> Upscaler:
    price = data.get("price")
    return Upscaler(
        service=service,
        name=name,
        version=data.get("version", ""),
        input=data.get("input", "image"),
        scale_input=data.get("scale_input", "scale"),
        scale=int(data.get("scale", 4)),
        max_scale=int(data.get("max_scale", data.get("scale", 4))),
        price=Decimal(str(price)) if price is not None else None,
        sources=dict(data.get("sources", {})),
    )


def upscaler(service: str, name: str) -> Upscaler:
    """Return what the catalogue knows of a service's upscaler (known=False if nothing); a
    Replicate name may carry its version."""
    entry = services().get(service)
    found = entry.upscalers.get(canonical(service, name)) if entry else None
    return found or Upscaler(service=service, name=canonical(service, name), known=False)


def default_upscaler(service: str) -> str:
    """Return the upscaler the studio asks a service for (as the service is asked: with
    its version where it runs by version); "" when the service lists none."""
    entry = services().get(service)
    if entry is None or not entry.upscaler:
        return ""
    return entry.upscalers[entry.upscaler].reference


def canonical(service: str, name: str) -> str:
    """Return the catalogue's name of a model as a setting may write it: a Replicate model
    named with its version ("owner/name:version") is the model's."""
    return name.split(":", 1)[0] if service == "replicate" else name


def model(service: str, name: str) -> Model:
    """Return what the catalogue knows of a service's model (known=False if nothing)."""
    entry = services().get(service)
    found = entry.models.get(canonical(service, name)) if entry else None
    return found or Model(service=service, name=name, known=False)


def default(service: str) -> str:
    """Return the model the studio uses for a service unless a setting names another."""
    entry = services().get(service)
    return entry.default if entry else ""


def models(service: str) -> list[Model]:
    """Return a service's models, in the catalogue's order (current ones first there)."""
    entry = services().get(service)
    return list(entry.models.values()) if entry else []


def offer(service: str, name: str, today: date) -> str:
    """Return the model to offer instead of a retired or retiring one: its replacement when
    that is current, else the service's default ("" when there is nothing better)."""
    found = model(service, name)
    for candidate in (found.replacement, default(service)):
        if candidate and candidate != name and model(service, candidate).state(today) == CURRENT:
            return candidate
    return ""


def refusal(service: str, name: str, today: date) -> str:
    """Return why the studio refuses to call a model (its service shut it down), naming the
    date and what to use instead; "" when it may be called."""
    found = model(service, name)
    if found.state(today) != RETIRED:
        return ""
    return found.notice(today) + offer_sentence(service, name, today)


def offer_sentence(service: str, name: str, today: date) -> str:
    """Return the sentence that points an editor at the one-click replacement."""
    instead = offer(service, name, today)
    if not instead:
        return " Choose another model in the project's Settings, then press Resume."
    return f" The project's Settings offer {instead} in one click; the run then continues with it."


def table(today: date, *, defaults_only: bool = False) -> str:
    """Return the Markdown table of the services' models: with defaults_only, each service's
    default (the README's Services table), else every model (docs/services.md)."""
    lines = [
        "| service | model | per image | references | batch | webhooks | shutdown |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for service in services().values():
        for entry in service.models.values():
            if defaults_only and entry.name != service.default:
                continue
            price = entry.price("1024x1024")
            name = f"`{entry.name}`" + (" (default)" if entry.name == service.default else "")
            refs = f"{entry.references} ({entry.references_how})" if entry.references else "none"
            end = entry.shutdown.isoformat() if entry.shutdown else "none announced"
            if entry.state(today) == RETIRED:
                end += f", use `{entry.replacement}`" if entry.replacement else ""
            if entry.tokens:
                cost = f"${price} (from usage)" if price is not None else "from usage"
            else:
                cost = f"${price}" if price is not None else "unknown"
            lines.append(
                f"| `{service.name}` | {name} | {cost} | {refs} | "
                f"{'yes' if entry.batch else 'no'} | {'yes' if entry.webhooks else 'no'} | {end} |"
            )
    return "\n".join(lines)
