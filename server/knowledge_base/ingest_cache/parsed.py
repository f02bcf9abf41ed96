"""Parsed documents in the ingest cache.

Two entries per file, both keyed by the file's content hash (never its name, so a renamed or re-uploaded
copy hits):
- its loaded documents, keyed also by the loader and every setting and library version that changes what
  the loader reads (OCR on/off and its settings, PDF thresholds, pixel limits); a new chunk size reuses
  them, so OCR is not run again;
- its chunks, keyed also by the chunking options; a rebuild with unchanged settings skips splitting too.
Values are zlib-compressed JSON. A value that no longer decodes is discarded and the file parsed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from functools import lru_cache
from importlib import metadata

from langchain_core.documents import Document

from server.knowledge_base.ingest_cache.store import IngestCache

logger = logging.getLogger(__name__)

# Bump when our own loaders or splitters change their output, so old entries stop matching.
PARSER_REVISION = 1
# Libraries whose version can change the text a loader or splitter produces.
OUTPUT_LIBRARIES = (
    "pypdfium2",
    "rapidocr-onnxruntime",
    "rapidocr-openvino",
    "python-docx",
    "python-pptx",
    "openpyxl",
    "xlrd",
    "lxml",
    "beautifulsoup4",
    "EbookLib",
    "charset-normalizer",
    "langchain-text-splitters",
    "jieba",
)


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    versions = {}
    for name in OUTPUT_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = ""
    return versions


def loader_settings() -> dict:
    """Settings read by the loaders themselves (beyond the ChunkingOptions passed to them)."""
    from configs import get_settings

    s = get_settings()
    return {
        "ocr_backend": s.OCR_BACKEND,
        "ocr_det": [s.OCR_DET_LIMIT_TYPE, s.OCR_DET_LIMIT_SIDE_LEN],
        "ocr_max_pixels": s.OCR_MAX_PIXELS,
    }


def _digest(kind: str, parts: dict) -> str:
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=list)
    return f"{kind}:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def documents_key(file_hash: str, loader_name: str, ocr: bool, pdf_ocr_threshold) -> str:
    return _digest(
        "docs",
        {
            "file": file_hash,
            "loader": loader_name,
            "ocr": ocr,
            "pdf_ocr_threshold": list(pdf_ocr_threshold),
            "settings": loader_settings(),
            "versions": library_versions(),
            "revision": PARSER_REVISION,
        },
    )


def chunks_key(docs_key: str, chunking: dict, is_table: bool) -> str:
    return _digest("chunks", {"docs": docs_key, "chunking": chunking, "table": is_table})


def _encode(value) -> bytes:
    return zlib.compress(json.dumps(value, ensure_ascii=False).encode("utf-8"), 1)


def _decode(cache: IngestCache, key: str, raw: bytes | None):
    if raw is None:
        return None
    try:
        return json.loads(zlib.decompress(raw))
    except (zlib.error, ValueError):
        cache.discard([key])
        return None


def get_documents(cache: IngestCache, key: str) -> list[Document] | None:
    value = _decode(cache, key, cache.get(key))
    if not isinstance(value, list):
        return None
    return [Document(page_content=item["text"], metadata=item["metadata"]) for item in value]


def put_documents(cache: IngestCache, key: str, docs: list[Document]) -> None:
    # "source" is the path the file was read from: the chunks get their own later, by name.
    items = [{"text": d.page_content, "metadata": _without_source(d.metadata)} for d in docs]
    cache.put(key, _encode(items))


def get_chunks(cache: IngestCache, key: str) -> tuple[list[tuple[str, dict]], str] | None:
    value = _decode(cache, key, cache.get(key))
    if not isinstance(value, dict):
        return None
    return [(text, metadata) for text, metadata in value["chunks"]], value["splitter"]


def put_chunks(cache: IngestCache, key: str, chunks: list[tuple[str, dict]], splitter_name: str) -> None:
    chunks = [(text, _without_source(metadata)) for text, metadata in chunks]
    cache.put(key, _encode({"chunks": chunks, "splitter": splitter_name}))


def _without_source(metadata: dict) -> dict:
    return {k: v for k, v in metadata.items() if k != "source"}
