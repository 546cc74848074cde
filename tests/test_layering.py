"""The layering the import contracts cannot see.

studio.models imports studio.changes, so studio.changes must not reach back: it finds the
project model from the rows' own relations (their `project_path`), never by name. A model
looked up through the app registry (apps.get_model("studio", "Project")) is an import
import-linter does not see, so this test reads the module's source for one."""

import ast
from pathlib import Path

import studio.changes

# Names that look a model up, or name the project model: none belongs in studio.changes.
LOOKUPS = {"apps", "get_model", "get_models", "all_models", "import_module", "Project"}


def test_the_change_counters_look_no_model_up_and_import_none():
    tree = ast.parse(Path(studio.changes.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            imported |= {f"{base}.{alias.name}" for alias in node.names}
    project_modules = {m for m in imported if m.startswith((".", "studio", "generation"))}
    assert project_modules == set()
    assert {m for m in imported if m.startswith("django.apps")} == set()

    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # apps.get_model("studio", "Project") by another route
    assert names & LOOKUPS == set()
