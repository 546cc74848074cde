"""Manuscripts: splitting, limits, and the import_project command."""

import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from studio.manuscript import (
    ManuscriptError,
    decode_manuscript,
    parse_manuscript,
    split_pages,
)
from studio.models import Project
from studio.services import TooManyPages, create_project
from tests.conftest import ROOT


def test_a_line_holding_only_three_dashes_separates_pages():
    assert split_pages("One.\n---\nTwo.\n  ---  \nThree.") == ["One.", "Two.", "Three."]


def test_dashes_inside_a_line_do_not_split():
    assert split_pages("A -- B --- C\n----\nD") == ["A -- B --- C\n----\nD"]


def test_empty_pages_and_trailing_separators_are_dropped():
    assert split_pages("---\nOne.\n---\n\n---\nTwo.\n---\n---\n") == ["One.", "Two."]


def test_windows_and_old_mac_line_endings_and_a_bom_are_understood():
    assert split_pages("\ufeffOne.\r\n---\r\nTwo.\r---\rThree.") == ["One.", "Two.", "Three."]
    assert decode_manuscript("\ufeffOne.\n---\nTwo.".encode()) == "One.\n---\nTwo."


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"])
def test_utf8_and_utf16_with_a_byte_order_mark_are_read(encoding):
    text = "Peter’s café 🦊\n---\nDeux."
    data = text.encode(encoding)
    if encoding in ("utf-16-le", "utf-16-be"):  # written with their byte order mark
        data = "\ufeff".encode(encoding) + data
    assert decode_manuscript(data) == text


def test_binary_behind_a_utf16_byte_order_mark_is_still_refused_clearly():
    with pytest.raises(ManuscriptError, match="This file is not text"):
        decode_manuscript(b"\xff\xfe\x01\x00\x02\x00\x89PNG\x1a\x00")  # control characters
    with pytest.raises(ManuscriptError, match="UTF-16 text that breaks off"):
        decode_manuscript(b"\xfe\xff\x00A\x00")  # cut off in the middle of a character


def test_odd_unicode_is_kept_as_written():
    assert split_pages("Ünïcödé 🦊 ‮text\n---\n日本語") == ["Ünïcödé 🦊 ‮text", "日本語"]


def test_a_binary_file_is_refused_clearly():
    with pytest.raises(ManuscriptError, match="This file is not text"):
        decode_manuscript(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(ManuscriptError, match="not UTF-8 text"):
        decode_manuscript("caf\xe9".encode("latin-1"))


def test_limits_have_clear_messages():
    with pytest.raises(ManuscriptError, match="no text"):
        parse_manuscript("\n---\n   \n")
    with pytest.raises(ManuscriptError, match="2,001 pages; a project can have at most 2,000"):
        parse_manuscript("\n---\n".join(f"Page {n}" for n in range(2001)))
    with pytest.raises(ManuscriptError, match="Page 2 has 5,001 characters"):
        parse_manuscript("Short.\n---\n" + "x" * 5001)
    with pytest.raises(ManuscriptError, match="at most 2 MB"):
        decode_manuscript(b"x" * (2 * 1024 * 1024 + 1))
    with pytest.raises(
        ManuscriptError, match="The manuscript is just over 2 MB; a manuscript can be at most 2 MB."
    ):
        parse_manuscript("x" * (2 * 1024 * 1024 + 1))


def test_three_hundred_pages_of_five_thousand_characters_are_fine():
    pages = parse_manuscript("\n---\n".join("y" * 5000 for _ in range(300)))
    assert len(pages) == 300


def test_two_thousand_short_pages_are_fine():
    pages = parse_manuscript("\n---\n".join(f"Shot {n}: the fox runs." for n in range(2000)))
    assert len(pages) == 2000


# --- the command -----------------------------------------------------------------------


@pytest.mark.django_db
def test_import_project_creates_the_pages_and_prints_the_id(tmp_path, editor, capsys):
    manuscript = tmp_path / "book.md"
    manuscript.write_text("The fox woke.\n---\nThe fox ate.\n---\nThe fox slept.\n")
    call_command("import_project", str(manuscript), "--title", "Fox Day", "--owner", "alice")
    project = Project.objects.get()
    assert capsys.readouterr().out == f"{project.pk}\n"
    assert (project.title, project.owner) == ("Fox Day", editor)
    assert list(project.pages.values_list("number", "text")) == [
        (1, "The fox woke."),
        (2, "The fox ate."),
        (3, "The fox slept."),
    ]


@pytest.mark.django_db
def test_import_project_takes_the_only_user_when_no_owner_is_named(tmp_path, editor):
    manuscript = tmp_path / "book.txt"
    manuscript.write_text("One page.")
    call_command("import_project", str(manuscript), "--title", "Solo")
    assert Project.objects.get().owner == editor


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "content", "args", "message"),
    [
        ("book.pdf", b"%PDF", ["--owner", "alice"], "a manuscript must be a .txt or .md file"),
        ("book.txt", b"\x00\x01binary", ["--owner", "alice"], "This file is not text"),
        ("book.txt", b"", ["--owner", "alice"], "The manuscript has no text."),
        ("book.txt", b"Fine.", ["--owner", "nobody"], "no user named 'nobody'"),
        ("missing.txt", None, ["--owner", "alice"], "No such file or directory"),
    ],
)
def test_import_project_refuses_bad_input_with_exit_code_2(
    tmp_path, editor, name, content, args, message
):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CommandError, match=message) as raised:
        call_command("import_project", str(path), "--title", "T", *args)
    assert raised.value.returncode == 2
    assert Project.objects.count() == 0


def test_from_the_shell_bad_input_exits_2_with_one_line(tmp_path):
    path = tmp_path / "book.exe"
    path.write_bytes(b"MZ")
    result = subprocess.run(
        [sys.executable, "manage.py", "import_project", str(path), "--title", "T"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"CommandError: {path}: a manuscript must be a .txt or .md file"
    ]


def test_import_project_refuses_a_manuscript_past_2000_pages(tmp_path, editor):
    path = tmp_path / "storyboard.txt"
    path.write_text("\n---\n".join(f"Shot {n}." for n in range(2001)), encoding="utf-8")
    with pytest.raises(CommandError, match="2,001 pages; a project can have at most 2,000") as e:
        call_command("import_project", str(path), "--title", "T", "--owner", "alice")
    assert e.value.returncode == 2
    assert Project.objects.count() == 0


def test_no_path_creates_a_project_past_2000_pages(editor):
    with pytest.raises(TooManyPages, match="at most 2,000 pages; this one would have 2,001"):
        create_project(owner=editor, title="Too big", pages=["x"] * 2001)
    assert Project.objects.count() == 0
    project = create_project(owner=editor, title="Just fits", pages=["x"] * 2000)
    assert project.pages.count() == 2000
