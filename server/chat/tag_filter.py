"""Removes the prompt template's markup tags from a streamed answer.

Chatchat's templates wrap the parts of the prompt in tags (``<指令>``, ``<已知信息>``,
``<问题>``); small models copy them into their answers ("... 7861。</问题>"). The tags are taken
from the template itself, so a custom template's tags go too and the answer's other markup stays.
Tokens arrive in pieces, so a piece that could be the start of a tag is held back until the next
one says whether it is.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from functools import lru_cache

# Models write the brackets in lookalike forms too (‹/问题>, ＜问题＞).
_OPEN = "<‹＜〈"
_CLOSE = ">›＞〉"
_TEMPLATE_TAG = re.compile(r"</?([^\s<>/{}]{1,16})>")
_JINJA = re.compile(r"{{.*?}}|{%.*?%}|{#.*?#}", re.S)


@lru_cache(maxsize=64)
def template_tags(template: str) -> frozenset[str]:
    """Names of the tags written in ``template`` itself (not in what its variables bring in)."""
    return frozenset(_TEMPLATE_TAG.findall(_JINJA.sub(" ", template)))


class TagStripper:
    def __init__(self, tags: Iterable[str]):
        self.tags = sorted(set(tags), key=len, reverse=True)
        names = "|".join(re.escape(tag) for tag in self.tags)
        self._pattern = re.compile(rf"[{_OPEN}]\s*/?\s*(?:{names})\s*[{_CLOSE}]") if self.tags else None
        self._held = ""

    def feed(self, piece: str) -> str:
        """The part of the answer so far that can be sent now, tags removed."""
        if self._pattern is None:
            return piece
        text = self._pattern.sub("", self._held + piece)
        keep = self._possible_tag_start(text)
        self._held = text[keep:]
        return text[:keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _possible_tag_start(self, text: str) -> int:
        """Where a trailing, unfinished tag may begin (len(text) when none may)."""
        start = max(text.rfind(c) for c in _OPEN)
        if start < 0:
            return len(text)
        rest = text[start + 1 :].lstrip().removeprefix("/").lstrip()
        if any(c in rest for c in _CLOSE) or not any(_may_become(rest, tag) for tag in self.tags):
            return len(text)
        return start


def _may_become(rest: str, tag: str) -> bool:
    """Whether text after an opening bracket may still grow into ``tag`` and its closing bracket."""
    return tag.startswith(rest) or (rest.startswith(tag) and not rest[len(tag) :].strip())


async def strip_tags(tokens: AsyncIterator[str], tags: Iterable[str]) -> AsyncIterator[str]:
    stripper = TagStripper(tags)
    async for token in tokens:
        if text := stripper.feed(token):
            yield text
    if text := stripper.flush():
        yield text
