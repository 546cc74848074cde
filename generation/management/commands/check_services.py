"""manage.py check_services [--json]: does each configured image service accept its key and
know its model? Only free look-ups (key info, model look-ups): never a paid call."""

import json
from decimal import Decimal

from django.core.management.base import CommandError

from generation.management.base import OperatorCommand, table
from generation.pricing import money
from generation.providers import configured_image_services, get_provider
from generation.providers.checks import NOT_CHECKED, REFUSED, Check


class Command(OperatorCommand):
    help = (
        "Check that each configured image service accepts its key and knows its model, with "
        "free look-ups only. Exit code 1 when any service refuses."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args, **options):
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
            rows.append(
                {
                    "name": service.name,
                    "label": service.label,
                    "model": service.model,
                    "price": None if service.price is None else str(service.price),
                    "key": _state(by_what.get("key")),
                    "model_check": _state(by_what.get("model")),
                    "refused": any(check.state == REFUSED for check in checks),
                }
            )
        refused = any(row["refused"] for row in rows)
        if options["json"]:
            self.stdout.write(json.dumps({"services": rows, "refused": refused}, indent=2))
        else:
            self.stdout.write(
                table(
                    [
                        {
                            **row,
                            "price": money(None if row["price"] is None else Decimal(row["price"])),
                            "key_text": _text(row["key"]),
                            "model_text": _text(row["model_check"]),
                        }
                        for row in rows
                    ],
                    [
                        ("name", "SERVICE"),
                        ("model", "MODEL"),
                        ("price", "PER IMAGE"),
                        ("key_text", "KEY"),
                        ("model_text", "MODEL CHECK"),
                    ],
                )
            )
        if refused:
            names = ", ".join(row["name"] for row in rows if row["refused"])
            raise CommandError(f"refused by: {names}", returncode=1)


def _state(check: Check | None) -> dict:
    if check is None:
        return {"state": NOT_CHECKED, "detail": ""}
    return {"state": check.state, "detail": check.detail}


def _text(state: dict) -> str:
    return state["state"] + (f" ({state['detail']})" if state["detail"] else "")
