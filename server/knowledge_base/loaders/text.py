"""Plain-text families: .txt .md .rst .py .toml .srt .json .jsonl .xml, and the shared decoder."""

from __future__ import annotations

import codecs
import json
import re
import unicodedata
from pathlib import Path

from langchain_core.documents import Document

from server.knowledge_base.loaders.base import LoadContext, LoaderError, join_nonempty

# Longest BOMs first: the UTF-32-LE BOM starts with the UTF-16-LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_ALLOWED_CONTROLS = set("\t\n\r\f\v")
# Share of control/replacement characters above which decoded text is treated as binary.
_MAX_GARBAGE_SHARE = 0.05
_SAMPLE_CHARS = 20_000


def read_text(path: Path, ctx: LoadContext) -> str:
    """Read and decode a text file, refusing binary data and empty files."""
    raw = path.read_bytes()
    if not raw.strip():
        raise LoaderError("file is empty")
    return decode_text(raw, ctx.ext)


def decode_text(raw: bytes, ext: str = ".txt") -> str:
    """Decode bytes in any common encoding: BOM, strict UTF-8, charset-normalizer, then GB18030."""
    text = _decode_with_bom(raw)
    if text is None:
        if b"\x00" in raw:
            text = _decode_bomless_utf16(raw)
            if text is None:
                raise LoaderError(f"binary content in a {ext} file (NUL bytes found)")
        else:
            text = _decode_utf8(raw) or _decode_detected(raw) or _decode_gb18030(raw)
    if text is None or _looks_binary(text):
        raise LoaderError(f"binary content in a {ext} file (mostly non-printable characters)")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _decode_with_bom(raw: bytes) -> str | None:
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            return raw[len(bom) :].decode(encoding, errors="replace")
    return None


def _decode_bomless_utf16(raw: bytes) -> str | None:
    """UTF-16 without a BOM: ASCII-heavy text then has a zero in every other byte."""
    even_zeros, odd_zeros = raw[0::2].count(0), raw[1::2].count(0)
    half = len(raw) / 2
    if odd_zeros > 0.4 * half and even_zeros < 0.05 * half:
        encoding = "utf-16-le"
    elif even_zeros > 0.4 * half and odd_zeros < 0.05 * half:
        encoding = "utf-16-be"
    else:
        return None
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        return None


def _decode_utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _decode_detected(raw: bytes) -> str | None:
    from charset_normalizer import from_bytes

    best = from_bytes(raw).best()
    return str(best) if best is not None else None


def _decode_gb18030(raw: bytes) -> str | None:
    try:
        return raw.decode("gb18030")
    except UnicodeDecodeError:
        return None


def _looks_binary(text: str) -> bool:
    sample = text[:_SAMPLE_CHARS]
    if not sample:
        return False
    garbage = sum(1 for ch in sample if _is_garbage(ch))
    return garbage / len(sample) > _MAX_GARBAGE_SHARE


def _is_garbage(ch: str) -> bool:
    if ch == "\ufffd":
        return True
    return unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROLS


# ---- loaders ------------------------------------------------------------------------------


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
