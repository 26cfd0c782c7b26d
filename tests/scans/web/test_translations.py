"""The Korean and English message catalogues: complete, with the same msgids and
placeholders, and holding every string the templates translate."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import BASE_DIR
from tests.support.translations import LOCALE_DIR

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("translations")]


# --- translations ----------------------------------------------------------------------------
def read_po(path: Path) -> list[dict]:
    """Entries of a .po file: msgid, msgid_plural, msgstr (index → text) and flags."""
    entries: list[dict] = []
    entry: dict = {}
    field = None

    def unquote(text: str) -> str:
        return json.loads(text)

    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if not line.strip():
            if "msgid" in entry:
                entries.append(entry)
            entry, field = {}, None
            continue
        if line.startswith("#,"):
            entry.setdefault("flags", set()).update(f.strip() for f in line[2:].split(","))
        elif line.startswith("#"):
            continue
        elif match := re.match(r"^(msgid|msgid_plural|msgstr(?:\[(\d+)\])?) (\".*\")$", line):
            name, index, text = match.groups()
            if name.startswith("msgstr"):
                field = ("msgstr", int(index or 0))
                entry.setdefault("msgstr", {})[field[1]] = unquote(text)
            else:
                field = name
                entry[name] = unquote(text)
        elif line.startswith('"') and field is not None:
            if isinstance(field, tuple):
                entry["msgstr"][field[1]] += unquote(line)
            else:
                entry[field] += unquote(line)
    return entries


PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


def test_the_korean_catalogue_translates_every_msgid():
    entries = read_po(LOCALE_DIR / "ko" / "LC_MESSAGES" / "django.po")
    header, messages = entries[0], entries[1:]
    assert header["msgid"] == "" and "Language: ko" in header["msgstr"][0]
    assert len(messages) > 100
    problems = []
    for entry in messages:
        texts = list(entry.get("msgstr", {}).values())
        if "fuzzy" in entry.get("flags", set()):
            problems.append(f"fuzzy: {entry['msgid']!r}")
        elif not texts or not all(t.strip() for t in texts):
            problems.append(f"untranslated: {entry['msgid']!r}")
        elif set(PLACEHOLDER.findall(entry["msgid"])) != set(PLACEHOLDER.findall(texts[0])):
            problems.append(f"placeholders differ: {entry['msgid']!r}")
    assert not problems, "locale/ko/LC_MESSAGES/django.po:\n" + "\n".join(problems)


def test_the_english_catalogue_has_the_same_msgids():
    ko = {e["msgid"] for e in read_po(LOCALE_DIR / "ko" / "LC_MESSAGES" / "django.po")}
    en_entries = read_po(LOCALE_DIR / "en" / "LC_MESSAGES" / "django.po")
    assert {e["msgid"] for e in en_entries} == ko
    assert not any("fuzzy" in e.get("flags", set()) for e in en_entries[1:])


def test_every_template_string_is_in_the_catalogue():
    """{% translate "…" %} in the templates: a string added without makemessages shows up
    untranslated; this names it."""
    msgids = {e["msgid"] for e in read_po(LOCALE_DIR / "ko" / "LC_MESSAGES" / "django.po")}
    tag = re.compile(r"""\{%\s*(?:translate|trans)\s+(["'])(.+?)\1""")
    missing = [
        f"{path.relative_to(BASE_DIR)}: {match.group(2)!r}"
        for path in sorted((BASE_DIR / "templates").rglob("*.html"))
        for match in tag.finditer(path.read_text(encoding="utf-8"))
        if match.group(2) not in msgids
    ]
    assert not missing, "run `make makemessages` and translate:\n" + "\n".join(missing)
