"""Plain-text families: .txt .md .rst .py .toml .srt .json .jsonl .xml."""

from __future__ import annotations

import json
import re
from pathlib import Path

from langchain_core.documents import Document

from server.knowledge_base.loaders.base import LoadContext, LoaderError, join_nonempty
from server.knowledge_base.loaders.decoding import decode_text


def read_text(path: Path, ctx: LoadContext) -> str:
    """Read and decode a text file, refusing binary data and empty files."""
    raw = path.read_bytes()
    if not raw.strip():
        raise LoaderError("file is empty")
    return decode_text(raw, ctx.ext)


def load_plain_text(path: Path, ctx: LoadContext) -> list[Document]:
    """.txt .md .rst .py .toml: the text as it is (Markdown keeps its headers for the header splitter)."""
    return [ctx.document(read_text(path, ctx))]


_SRT_TIMING = re.compile(r"^\s*\d{1,2}:\d{2}:\d{2}[,.]\d{1,3}\s*-->")


def load_subtitles(path: Path, ctx: LoadContext) -> list[Document]:
    """.srt: only the spoken lines, without cue numbers and timings."""
    lines = read_text(path, ctx).split("\n")
    spoken = [line for line in lines if not line.strip().isdigit() and not _SRT_TIMING.match(line)]
    return [ctx.document(join_nonempty(spoken))]


def load_json(path: Path, ctx: LoadContext) -> list[Document]:
    """.json: the whole document as pretty JSON text (Chatchat: jq '.' with text_content=False)."""
    text = read_text(path, ctx)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoaderError(f"invalid JSON: {exc}")
    return [ctx.document(json.dumps(data, ensure_ascii=False, indent=2))]


def load_json_lines(path: Path, ctx: LoadContext) -> list[Document]:
    """.jsonl: one Document per non-blank line, `row` counting lines from 1."""
    docs = []
    for line_number, line in enumerate(read_text(path, ctx).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LoaderError(f"invalid JSON on line {line_number}: {exc}")
        docs.append(ctx.document(json.dumps(data, ensure_ascii=False), row=line_number))
    return docs


def load_xml(path: Path, ctx: LoadContext) -> list[Document]:
    """.xml: the text content of all elements, one piece per line."""
    from lxml import etree

    raw = path.read_bytes()
    if not raw.strip():
        raise LoaderError("file is empty")
    # No entity expansion or network access: uploaded XML is untrusted.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, recover=True, huge_tree=False)
    try:
        root = etree.fromstring(raw, parser)
    except etree.XMLSyntaxError as exc:
        raise LoaderError(f"XML is not well-formed: {exc}")
    if root is None:
        raise LoaderError("XML is not well-formed: no root element could be read")
    return [ctx.document(join_nonempty(root.itertext()))]
