"""Every text the pages ask for exists in both languages."""

from __future__ import annotations

import re
from pathlib import Path

from webui_pages.i18n import TEXTS

PAGES = Path(__file__).resolve().parents[2] / "webui_pages"


def used_keys() -> set[str]:
    keys = set()
    for path in PAGES.rglob("*.py"):
        keys.update(re.findall(r"""\bt\(\s*["']([a-z_]+)["']""", path.read_text(encoding="utf-8")))
    return keys


def test_every_used_key_is_translated():
    keys = used_keys()
    assert len(keys) > 50
    missing = keys - set(TEXTS)
    assert not missing, missing
    from webui_pages.dialogue.page import MODES

    assert all(f"mode_{mode}" in TEXTS for mode in MODES)
    assert all(f"nav_{page}" in TEXTS for page in ("dialogue", "knowledge_base"))


def test_both_languages_have_the_same_placeholders():
    for key, (zh, en) in TEXTS.items():
        assert zh and en, key
        assert set(re.findall(r"\{(\w+)\}", zh)) == set(re.findall(r"\{(\w+)\}", en)), key
