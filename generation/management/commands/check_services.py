"""manage.py check_services [--json] [--strict] [--table]: does each configured image service
accept its key and know its model, and is the model still current? Only free look-ups (key
info, model look-ups): never a paid call. The model's lifecycle and sizes are the catalogue's
(generation/catalogue.toml): a model its service has shut down, or a picture size it does not
take, is refused (exit code 1); one shut down within 30 days is a warning (exit code 1 with
--strict). The print export's upscaler (STUDIO_UPSCALE_PROVIDER), when one is chosen, is checked
the same way (its key and model, and whether the catalogue lists it); chosen without its key,
it is a warning (exit code 1 with --strict). --table prints the catalogue as the README's
Services table."""

import json
from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings
from django.core.management.base import CommandError

from generation import catalogue
from generation.management.base import OperatorCommand, table
from generation.pricing import money, price_per_upscale
from generation.providers import (
    UPSCALE_KEYS,
    configured_image_services,
    get_provider,
    get_upscale_provider,
    upscale_configured,
)
from generation.providers.checks import NOT_CHECKED, REFUSED, Check

# An upscaler chosen (STUDIO_UPSCALE_PROVIDER) whose key is not set: nothing to ask, and
# the export page offers the local resample only.
MISSING = "missing"


class Command(OperatorCommand):
    help = (
        "Check that each configured image service accepts its key and knows its model, with "
        "free look-ups only, and that the model is not shut down (or soon, with --strict); "
        "the same for the print export's upscaler when one is chosen. "
        "Exit code 1 when any service refuses."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.add_argument(
            "--strict",
            action="store_true",
            help="exit code 1 also when a model is shut down within 30 days",
        )
        parser.add_argument(
            "--table",
            action="store_true",
            help="print the catalogue's models as a Markdown table (the README's) and exit",
        )

    def handle(self, *args, **options):
        # The machine's date (UTC): a day's precision needs no database, and the command
        # runs where no database may be reachable yet.
        today = datetime.now(UTC).date()
        if options["table"]:
            self.stdout.write(catalogue.table(today, defaults_only=True))
            return
        rows = []
        for service in configured_image_services():
            if service.name == "embedded":
                checks = [
                    Check("key", NOT_CHECKED, "offline: no key"),
                    Check("model", NOT_CHECKED, "offline: no model"),
                ]
            else:
                checks = get_provider(service.name).check()
            by_what = {check.what: check for check in checks}
            lifecycle = _lifecycle(service.name, service.model, today)
            size = _size(service.name, service.model)
            rows.append(
                {
                    "name": service.name,
                    "label": service.label,
                    "model": service.model,
                    "price": None if service.price is None else str(service.price),
                    "key": _state(by_what.get("key")),
                    "model_check": _state(by_what.get("model")),
                    "lifecycle": lifecycle,
                    "size": size,
                    # Refused: the key or the model, a shut-down model, or a size it never takes.
                    "refused": any(check.state == REFUSED for check in checks)
                    or lifecycle["state"] == catalogue.RETIRED
                    or size["state"] == REFUSED,
                }
            )
        upscaler = _upscaler()
        refused = any(row["refused"] for row in rows) or bool(upscaler and upscaler["refused"])
        warnings = [
            row["lifecycle"]["message"]
            for row in rows
            if row["lifecycle"]["state"] == catalogue.RETIRING
        ]
        if upscaler and upscaler["warning"]:
            warnings.append(upscaler["warning"])
        if options["json"]:
            report = {
                "services": rows,
                "upscaler": upscaler,
                "refused": refused,
                "warnings": warnings,
            }
            self.stdout.write(json.dumps(report, indent=2))
        else:
            self.stdout.write(
                table(
                    [
                        {
                            **row,
                            "price": money(None if row["price"] is None else Decimal(row["price"])),
                            "key_text": _text(row["key"]),
                            "model_text": _text(row["model_check"]),
                            "end": row["lifecycle"]["shutdown"] or "-",
                        }
                        for row in rows
                    ]
                    + ([_upscaler_line(upscaler)] if upscaler else []),
                    [
                        ("name", "SERVICE"),
                        ("model", "MODEL"),
                        ("price", "PER IMAGE"),
                        ("key_text", "KEY"),
                        ("model_text", "MODEL CHECK"),
                        ("end", "SHUTDOWN"),
                    ],
                )
            )
            for row in rows:
                for problem in (row["lifecycle"]["message"], row["size"]["detail"]):
                    if problem:
                        self.stdout.write(f"{row['name']}: {problem}")
            if upscaler and upscaler["warning"]:
                self.stdout.write(f"{_upscaler_name(upscaler)}: {upscaler['warning']}")
        if refused:
            names = [row["name"] for row in rows if row["refused"]]
            if upscaler and upscaler["refused"]:
                names.append(_upscaler_name(upscaler))
            raise CommandError(f"refused by: {', '.join(names)}", returncode=1)
        if warnings and options["strict"]:
            names = ", ".join(
                row["name"] for row in rows if row["lifecycle"]["state"] == catalogue.RETIRING
            )
            problems = [f"models shut down within 30 days: {names}"] if names else []
            if upscaler and upscaler["warning"]:
                problems.append(f"{_upscaler_name(upscaler)}: {upscaler['warning']}")
            raise CommandError("; ".join(problems), returncode=1)


def _upscaler() -> dict | None:
    """Return what the print export's upscaler says (None when none is chosen): its key and
    model, by the same free look-ups as its service's pictures, and whether the catalogue
    lists it (one it does not list is asked with guessed inputs and has no price). Refused:
    its key or its model; a warning: chosen without its key, or not in the catalogue."""
    name = settings.STUDIO_UPSCALE_PROVIDER
    if not name:
        return None
    model = settings.STUDIO_UPSCALE_MODEL
    listed = catalogue.upscaler(name, model).known
    price = price_per_upscale(name, model)
    if upscale_configured():
        checks = get_upscale_provider().check()
        warning = "" if listed else f"the catalogue does not list {model} as an upscaler"
    else:
        key_setting = UPSCALE_KEYS[name]
        checks = [
            Check("key", MISSING, f"{key_setting} is not set"),
            Check("model", NOT_CHECKED, "no key to ask with"),
        ]
        warning = (
            f"STUDIO_UPSCALE_PROVIDER is {name} but {key_setting} is not set: "
            "the print export offers the local resample only"
        )
    by_what = {check.what: check for check in checks}
    return {
        "name": name,
        "model": model,
        "price": None if price is None else str(price),
        "key": _state(by_what.get("key")),
        "model_check": _state(by_what.get("model")),
        "catalogue": "listed" if listed else "not listed",
        "refused": any(check.state == REFUSED for check in checks),
        "warning": warning,
    }


def _upscaler_name(upscaler: dict) -> str:
    return f"upscaler ({upscaler['name']})"


def _upscaler_line(upscaler: dict) -> dict:
    """Return the upscaler's line of the table, under the image services' columns."""
    price = upscaler["price"]
    return {
        "name": _upscaler_name(upscaler),
        "model": catalogue.canonical(upscaler["name"], upscaler["model"]),
        # Fractions of a cent: "$0.0025", where money() would round it to "$0.002".
        "price": money(None) if price is None else f"${price}",
        "key_text": _text(upscaler["key"]),
        "model_text": _text(upscaler["model_check"]),
        "end": "-",
    }


def _lifecycle(service: str, model: str, today) -> dict:
    """Return where a model stands in its life: current, retiring (shut down within 30
    days) or retired, its shutdown date, its replacement and what to tell the operator."""
    listed = catalogue.model(service, model)
    state = listed.state(today) if model else catalogue.CURRENT
    return {
        "state": state,
        "shutdown": listed.shutdown.isoformat() if listed.shutdown else None,
        "replacement": catalogue.offer(service, model, today) if state != catalogue.CURRENT else "",
        "message": listed.notice(today) if model else "",
    }


def _size(service: str, model: str) -> dict:
    """Return whether the model takes the studio's picture size (STUDIO_IMAGE_SIZE)."""
    listed = catalogue.model(service, model)
    if not model or not listed.known:
        return {"state": NOT_CHECKED, "detail": ""}
    problem = listed.size_problem(settings.STUDIO_IMAGE_SIZE)
    if problem:
        return {"state": REFUSED, "detail": f"{problem} (STUDIO_IMAGE_SIZE)"}
    return {"state": "accepted", "detail": ""}


def _state(check: Check | None) -> dict:
    if check is None:
        return {"state": NOT_CHECKED, "detail": ""}
    return {"state": check.state, "detail": check.detail}


def _text(state: dict) -> str:
    return state["state"] + (f" ({state['detail']})" if state["detail"] else "")
