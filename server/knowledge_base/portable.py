"""Portable knowledge bases: one zip archive with everything another instance needs.

Layout of the archive (``FORMAT`` version ``FORMAT_VERSION``)::

    manifest.json   the knowledge base's settings (name, description, chunking), its embedding model's
                    fingerprint (name, dimension, weights when known) and every ingested file's record
    chunks.jsonl    one chunk a line: {"id", "text", "metadata"}, grouped by file in manifest order
    vectors.npy     the chunks' vectors, row i for line i (float32; read with allow_pickle=False)
    keywords.json   the keyword (BM25) index: each chunk's search terms and the tokenizer version
    content/...     the files of content/, ingested or not

Importing stores the vectors as they are when the local embedding model has the same fingerprint,
so searches answer exactly as in the exporting instance and nothing is embedded. When the model
differs (another name or dimension, or weights when both sides know theirs), the chunk texts are
embedded again with the local model and the result says so in ``warnings``; files are not parsed
again. The keyword index is rebuilt from the chunk texts, which gives the same index when the
tokenizer versions match (a different version would be rebuilt anyway, as a store does on load).

Archives are untrusted. Before anything is written, every member is checked: only the names above
(content files by the same rules as uploads), no absolute paths, ``..``, symlinks or other special
files, no encryption, at most ``KB_ARCHIVE_MAX_MEMBERS`` members and ``KB_ARCHIVE_MAX_UNPACKED_BYTES``
unpacked, no member over 1 MiB unpacking more than ``KB_ARCHIVE_MAX_COMPRESSION_RATIO`` times its
packed size, no content file over ``MAX_UPLOAD_FILE_SIZE``. Bytes are counted again while they are
read, so a lying header gains nothing. A failed import removes what it created; an existing knowledge
base is never touched.
"""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import tempfile
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np

from configs import VERSION, get_settings
from server.db.repositories.knowledge_file import ChunkRow, FileIngestion
from server.knowledge_base import paths, service
from server.knowledge_base.embeddings import UnknownEmbeddingModel, check_embedding_model, get_embeddings
from server.knowledge_base.keyword_index import tokenize
from server.knowledge_base.vector_stores import StoredChunk
from server.knowledge_base.vector_stores.faiss_store import TOKENIZER_VERSION

logger = logging.getLogger(__name__)

FORMAT = "chatkb-knowledge-base"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CHUNKS = "chunks.jsonl"
VECTORS = "vectors.npy"
KEYWORDS = "keywords.json"
CONTENT_PREFIX = "content/"
DATA_MEMBERS = frozenset({MANIFEST, CHUNKS, VECTORS, KEYWORDS})
REQUIRED_MEMBERS = frozenset({MANIFEST, CHUNKS, VECTORS})
# Members this small are too small to be a zip bomb whatever their ratio (an all-zero vectors file is legal).
RATIO_FLOOR_BYTES = 1024 * 1024
COPY_CHUNK = 1024 * 1024
EMBED_BATCH = 256


class ArchiveRefused(ValueError):
    """An archive that is not a knowledge-base export, or that is unsafe to unpack: nothing was written."""


@dataclass(frozen=True)
class EmbeddingFingerprint:
    """What identifies an embedding model's vectors: importing keeps them only when this matches."""

    model: str
    dimension: int
    weights: str | None = None  # a digest of the weights, once the model registry records one

    def matches(self, other: EmbeddingFingerprint) -> bool:
        same_weights = self.weights is None or other.weights is None or self.weights == other.weights
        return self.model == other.model and self.dimension == other.dimension and same_weights


def weights_fingerprint(model: str) -> str | None:
    """Hook for the embedding drift guard's weights digest; None until the model registry keeps one."""
    return None


def local_fingerprint(model: str) -> EmbeddingFingerprint:
    return EmbeddingFingerprint(model, get_embeddings(model).dimension, weights_fingerprint(model))


@dataclass
class ImportResult:
    kb_name: str
    embed_model: str
    files: int = 0
    content_files: int = 0
    chunks: int = 0
    reembedded: bool = False
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


# ---- export --------------------------------------------------------------------------------


def export_kb(kb_name: str, destination: Path) -> dict[str, Any]:
    """Write the knowledge base's archive to ``destination`` (replaced atomically); returns its manifest."""
    kb = service.get_kb(kb_name)
    snapshots = service.snapshot_files(kb_name)
    fingerprint = local_fingerprint(kb.embed_model)
    content = paths.list_content_files(kb_name)
    manifest = _manifest(kb, fingerprint, snapshots, content)
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            archive.writestr(MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=1))
            with archive.open(CHUNKS, "w", force_zip64=True) as handle:
                for line in _chunk_lines(snapshots):
                    handle.write(line.encode("utf-8"))
            with archive.open(VECTORS, "w", force_zip64=True) as handle:
                _write_vectors(handle, snapshots, fingerprint.dimension)
            archive.writestr(KEYWORDS, json.dumps(_keyword_terms(snapshots), ensure_ascii=False))
            for name in content:
                archive.write(paths.file_path(kb_name, name), CONTENT_PREFIX + name)
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)
    return manifest


def _manifest(kb, fingerprint: EmbeddingFingerprint, snapshots, content: list[str]) -> dict[str, Any]:
    settings = get_settings()
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "chatkb_version": VERSION,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "knowledge_base": {"name": kb.kb_name, "info": kb.kb_info, "vs_type": kb.vs_type},
        # Chunking settings of the exporting instance: the chunks were cut with them (unless changed since).
        "chunking": {
            "chunk_size": settings.CHUNK_SIZE,
            "overlap_size": settings.OVERLAP_SIZE,
            "text_splitter": settings.TEXT_SPLITTER_NAME,
            "zh_title_enhance": settings.ZH_TITLE_ENHANCE,
        },
        "embedding": {
            "model": fingerprint.model,
            "dimension": fingerprint.dimension,
            "weights": fingerprint.weights,
        },
        "files": [
            {
                "file_name": s.record.file_name,
                "loader": s.record.loader_name,
                "splitter": s.record.splitter_name,
                "mtime": s.record.file_mtime,
                "size": s.record.file_size,
                "hash": s.record.file_hash,
                "custom_docs": s.record.custom_docs,
                "chunks": len(s.chunks),
            }
            for s in snapshots
        ],
        "content": content,
        "chunks": sum(len(s.chunks) for s in snapshots),
    }


def _chunk_lines(snapshots) -> Iterator[str]:
    for snapshot in snapshots:
        for chunk in snapshot.chunks:
            line = {"id": chunk.doc_id, "text": chunk.page_content, "metadata": chunk.metadata}
            yield json.dumps(line, ensure_ascii=False) + "\n"


def _write_vectors(handle: BinaryIO, snapshots, dimension: int) -> None:
    """One .npy array of every file's vectors, written file by file instead of concatenated in memory."""
    rows = sum(len(s.vectors) for s in snapshots)
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
        "fortran_order": False,
        "shape": (rows, dimension),
    }
    np.lib.format.write_array_header_1_0(handle, header)
    for snapshot in snapshots:
        handle.write(np.ascontiguousarray(snapshot.vectors, dtype="<f4").tobytes())


def _keyword_terms(snapshots) -> dict[str, Any]:
    terms = {c.doc_id: dict(Counter(tokenize(c.page_content))) for s in snapshots for c in s.chunks}
    return {"tokenizer": TOKENIZER_VERSION, "terms": terms}


# ---- import --------------------------------------------------------------------------------


def import_kb(source: Path | BinaryIO, kb_name: str | None = None, embed_model: str | None = None) -> ImportResult:
    """Create a knowledge base from an archive (named ``kb_name``, or as exported).

    Raises ArchiveRefused for an unsafe or malformed archive and service.KnowledgeBaseExists when the
    name is taken; in both cases nothing was written."""
    started = time.perf_counter()
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveRefused(f"not a zip archive: {exc}") from exc
    with archive:
        content = _check_members(archive)
        manifest = _read_manifest(archive)
        name = kb_name or _manifest_kb_name(manifest)
        paths.validate_kb_name(name)
        if service.kb_exists(name) or paths.kb_path(name).exists():  # a folder alone is someone's files too
            raise service.KnowledgeBaseExists(name)
        snapshots = _read_snapshots(archive, manifest)
        target_model, warnings = _choose_model(manifest, embed_model)
        result = ImportResult(name, target_model, warnings=warnings)
        kb = manifest["knowledge_base"]
        service.create_kb(name, embed_model=target_model, kb_info=str(kb.get("info") or "") or None)
        try:
            result.content_files = _extract_content(archive, content, name)
            if warnings:  # another model: the archived vectors mean nothing to it
                _reembed(snapshots, target_model)
                result.reembedded = True
            result.chunks = service.store_snapshots(name, snapshots)
        except BaseException:
            service.delete_kb(name)  # leave no half-imported knowledge base behind
            raise
    result.files = len(snapshots)
    result.seconds = time.perf_counter() - started
    for warning in warnings:
        logger.warning("import of %s: %s", name, warning)
    return result


def _check_members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Refuse the archive unless every member is safe; returns the content files by relative name."""
    settings = get_settings()
    members = archive.infolist()
    if len(members) > settings.KB_ARCHIVE_MAX_MEMBERS:
        raise ArchiveRefused(
            f"{len(members)} members: more than KB_ARCHIVE_MAX_MEMBERS ({settings.KB_ARCHIVE_MAX_MEMBERS})"
        )
    seen: set[str] = set()
    content: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in members:
        name = info.filename
        _check_name(name)
        if name in seen:
            raise ArchiveRefused(f"member {name!r} appears twice")
        seen.add(name)
        _check_kind(info)
        if info.is_dir():
            continue
        total += info.file_size
        if total > settings.KB_ARCHIVE_MAX_UNPACKED_BYTES:
            raise ArchiveRefused(
                f"unpacks to more than KB_ARCHIVE_MAX_UNPACKED_BYTES ({settings.KB_ARCHIVE_MAX_UNPACKED_BYTES} bytes)"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR_BYTES and ratio > settings.KB_ARCHIVE_MAX_COMPRESSION_RATIO:
            raise ArchiveRefused(
                f"member {name!r} unpacks {ratio:.0f} times its packed size (a zip bomb?): "
                f"more than KB_ARCHIVE_MAX_COMPRESSION_RATIO ({settings.KB_ARCHIVE_MAX_COMPRESSION_RATIO:g})"
            )
        if name.startswith(CONTENT_PREFIX):
            if info.file_size > settings.MAX_UPLOAD_FILE_SIZE:
                raise ArchiveRefused(
                    f"content file {name!r} is {info.file_size} bytes: more than MAX_UPLOAD_FILE_SIZE "
                    f"({settings.MAX_UPLOAD_FILE_SIZE})"
                )
            content[name[len(CONTENT_PREFIX) :]] = info
    missing = sorted(REQUIRED_MEMBERS - seen)
    if missing:
        raise ArchiveRefused(f"not a knowledge-base export: {', '.join(missing)} missing")
    return content


def _check_name(name: str) -> None:
    if "\x00" in name or "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveRefused(f"member {name!r} has an absolute or malformed path")
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise ArchiveRefused(f"member {name!r} points outside the archive's folder")
    if name.rstrip("/") + "/" == CONTENT_PREFIX or name in DATA_MEMBERS:
        return
    if not name.startswith(CONTENT_PREFIX):
        raise ArchiveRefused(f"member {name!r} is not part of a knowledge-base export")
    try:
        paths.validate_file_name(name[len(CONTENT_PREFIX) :].rstrip("/"))
    except paths.UnsafeName as exc:
        raise ArchiveRefused(f"member {name!r} has an unsafe file name: {exc}") from exc


def _check_kind(info: zipfile.ZipInfo) -> None:
    if info.flag_bits & 0x1:
        raise ArchiveRefused(f"member {info.filename!r} is encrypted")
    # Unix modes sit in the high 16 bits; no type bits (Python's writestr) means a plain file.
    kind_bits = stat.S_IFMT(info.external_attr >> 16)
    if kind_bits and kind_bits not in (stat.S_IFREG, stat.S_IFDIR):
        kind = "a symlink" if kind_bits == stat.S_IFLNK else "not a regular file"
        raise ArchiveRefused(f"member {info.filename!r} is {kind}")


def _read_member(archive: zipfile.ZipFile, name: str) -> bytes:
    info = archive.getinfo(name)
    buffer = io.BytesIO()
    with archive.open(info) as member:
        _copy_counted(member, buffer, info)
    return buffer.getvalue()


def _copy_counted(member: BinaryIO, target: BinaryIO, info: zipfile.ZipInfo) -> None:
    """Copy a member, refusing it the moment it unpacks to more than its header declared."""
    copied = 0
    try:
        while block := member.read(COPY_CHUNK):
            copied += len(block)
            if copied > info.file_size:
                raise ArchiveRefused(
                    f"member {info.filename!r} unpacks to more than its declared {info.file_size} bytes"
                )
            target.write(block)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # a corrupt member, or a header that lies
        raise ArchiveRefused(f"member {info.filename!r} cannot be unpacked: {exc}") from exc


def _read_manifest(archive: zipfile.ZipFile) -> dict[str, Any]:
    try:
        manifest = json.loads(_read_member(archive, MANIFEST))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArchiveRefused(f"{MANIFEST} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveRefused(f"{MANIFEST} does not describe a {FORMAT} archive")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArchiveRefused(
            f"archive format version {manifest.get('format_version')!r}; this version reads {FORMAT_VERSION}"
        )
    for key in ("knowledge_base", "embedding"):
        if not isinstance(manifest.get(key), dict):
            raise ArchiveRefused(f"{MANIFEST} lacks {key!r}")
    if not isinstance(manifest.get("files"), list):
        raise ArchiveRefused(f"{MANIFEST} lacks 'files'")
    return manifest


def _manifest_kb_name(manifest: dict[str, Any]) -> str:
    name = manifest["knowledge_base"].get("name")
    if not isinstance(name, str) or not name:
        raise ArchiveRefused(f"{MANIFEST} names no knowledge base")
    try:
        return paths.validate_kb_name(name)
    except paths.UnsafeName as exc:
        raise ArchiveRefused(f"the archive's knowledge-base name {name!r} is unsafe: {exc}") from exc


def _read_snapshots(archive: zipfile.ZipFile, manifest: dict[str, Any]) -> list[service.FileSnapshot]:
    """The files' records, chunks and vectors, checked against each other."""
    try:
        lines = _read_member(archive, CHUNKS).decode("utf-8").splitlines()
        chunks = [json.loads(line) for line in lines if line.strip()]
        vectors = np.load(io.BytesIO(_read_member(archive, VECTORS)), allow_pickle=False)
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise ArchiveRefused(f"{CHUNKS} or {VECTORS} cannot be read: {exc}") from exc
    dimension = manifest["embedding"].get("dimension")
    if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape != (len(chunks), dimension):
        raise ArchiveRefused(
            f"{VECTORS} holds {vectors.dtype} {vectors.shape}; expected float32 ({len(chunks)}, {dimension})"
        )
    snapshots, start, ids = [], 0, set()
    for entry in manifest["files"]:
        record, count = _file_record(entry)
        group = chunks[start : start + count]
        if len(group) != count:
            raise ArchiveRefused(f"{CHUNKS} has fewer chunks than the manifest lists for {record.file_name!r}")
        stored = [_stored_chunk(item, record.file_name) for item in group]
        ids.update(chunk.doc_id for chunk in stored)
        rows = [ChunkRow(chunk.doc_id, chunk.metadata) for chunk in stored]
        snapshots.append(service.FileSnapshot(_with_rows(record, rows), stored, vectors[start : start + count]))
        start += count
    if start != len(chunks) or len(ids) != len(chunks):
        raise ArchiveRefused(f"{CHUNKS} does not match the manifest (extra or repeated chunks)")
    return snapshots


def _file_record(entry: Any) -> tuple[FileIngestion, int]:
    if not isinstance(entry, dict) or not isinstance(entry.get("chunks"), int) or entry["chunks"] < 0:
        raise ArchiveRefused(f"malformed file entry in {MANIFEST}: {str(entry)[:200]}")
    try:
        file_name = paths.validate_file_name(str(entry.get("file_name") or ""))
    except paths.UnsafeName as exc:
        raise ArchiveRefused(f"unsafe file name in {MANIFEST}: {exc}") from exc
    record = FileIngestion(
        file_name,
        str(entry.get("loader") or ""),
        str(entry.get("splitter") or ""),
        float(entry.get("mtime") or 0.0),
        int(entry.get("size") or 0),
        entry.get("hash") if isinstance(entry.get("hash"), str) else None,
        bool(entry.get("custom_docs")),
        [],
    )
    return record, entry["chunks"]


def _stored_chunk(item: Any, file_name: str) -> StoredChunk:
    if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not isinstance(item.get("id"), str):
        raise ArchiveRefused(f"malformed chunk in {CHUNKS}: {str(item)[:200]}")
    metadata = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
    if metadata.get("source", file_name) != file_name:
        raise ArchiveRefused(f"chunk {item['id']!r} says it comes from {metadata['source']!r}, not {file_name!r}")
    return StoredChunk(item["id"], item["text"], {**metadata, "source": file_name})


def _with_rows(record: FileIngestion, rows: list[ChunkRow]) -> FileIngestion:
    return FileIngestion(*(getattr(record, f) for f in FileIngestion.__dataclass_fields__ if f != "chunks"), rows)


def _choose_model(manifest: dict[str, Any], requested: str | None) -> tuple[str, list[str]]:
    """The model the import builds with, and warnings when its vectors must be made again."""
    embedding = manifest["embedding"]
    archived = EmbeddingFingerprint(
        str(embedding.get("model") or ""), int(embedding.get("dimension") or 0), embedding.get("weights")
    )
    target = requested or archived.model
    warnings = []
    try:
        check_embedding_model(target)
    except UnknownEmbeddingModel:
        if requested:
            raise
        target = get_settings().EMBEDDING_MODEL
        warnings.append(f"the archive's embedding model {archived.model!r} is not available here")
    local = local_fingerprint(target)
    if not local.matches(archived) and not warnings:
        warnings.append(
            f"the archive's vectors come from {archived.model!r} ({archived.dimension} dimensions), "
            f"not {local.model!r} ({local.dimension} dimensions)"
        )
    if warnings:
        warnings[-1] += f": the chunks are embedded again with {target!r} (search results may differ)"
    return target, warnings


def _extract_content(archive: zipfile.ZipFile, content: dict[str, zipfile.ZipInfo], kb_name: str) -> int:
    count = 0
    for name, info in content.items():
        if info.is_dir():
            continue
        target = paths.file_path(kb_name, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as member, open(target, "xb") as handle:
            _copy_counted(member, handle, info)
        count += 1
    return count


def _reembed(snapshots: list[service.FileSnapshot], model: str) -> None:
    backend = get_embeddings(model)
    for snapshot in snapshots:
        texts = [chunk.page_content for chunk in snapshot.chunks]
        parts = [backend.embed(texts[i : i + EMBED_BATCH]) for i in range(0, len(texts), EMBED_BATCH)]
        snapshot.vectors = (
            np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, backend.dimension), np.float32)
        )


def temporary_export_path() -> Path:
    """A fresh path under BASE_TEMP_DIR for an archive a route sends and then deletes."""
    folder = get_settings().BASE_TEMP_DIR / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(suffix=".zip", dir=folder)
    os.close(handle)
    return Path(name)
