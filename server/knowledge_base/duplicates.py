"""Duplicate content within a knowledge base: the same bytes under another file name.

With DUPLICATE_FILES="skip" (the default) such a file is kept in content/ but not ingested again (its
chunks would only crowd search results with copies), and reported: in the upload response's
``duplicate_files``, in the file table (as the reason it is not in the database) and by init_database.py.
"refuse" does not save an uploaded duplicate at all and reports it among ``failed_files``; "allow" ingests
every copy as before.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

from configs import get_settings
from server.db.repositories import knowledge_file as file_repo
from server.knowledge_base.ingest import file_digest

BLOCK = 1 << 20


def policy() -> str:
    return get_settings().DUPLICATE_FILES


def find_duplicates(kb_name: str, named_hashes: list[tuple[str, str | None]]) -> dict[str, str]:
    """{name: the file with the same content}: an ingested file of the knowledge base not in this list,
    or an earlier name of the list (the first copy wins)."""
    names = {name for name, _ in named_hashes}
    seen = {
        record.file_hash: record.file_name
        for record in file_repo.list_files(kb_name)
        if record.file_hash and not record.custom_docs and record.file_name not in names
    }
    duplicates = {}
    for name, digest in named_hashes:
        if digest is None:
            continue
        original = seen.setdefault(digest, name)
        if original != name:
            duplicates[name] = original
    return duplicates


def digest_or_none(path: Path) -> str | None:
    """The file's content hash, or None when it cannot be read (parsing then reports why)."""
    try:
        return file_digest(path)
    except OSError:
        return None


def stream_digest(stream: BinaryIO) -> str:
    """The content hash of an upload, leaving the stream at its start."""
    digest = hashlib.sha256()
    stream.seek(0)
    while block := stream.read(BLOCK):
        digest.update(block)
    stream.seek(0)
    return digest.hexdigest()


def message(name: str, original: str) -> str:
    return f"文件 {name} 与已有文件 {original} 内容相同，未重复入库 (same content as {original})"
