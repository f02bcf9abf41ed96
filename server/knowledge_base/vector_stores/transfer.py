"""Copy a store into another one, vectors and all: a knowledge base changes store without embedding again."""

from __future__ import annotations

from pathlib import Path

from server.knowledge_base.vector_stores.base import StoredChunk, VectorStore

BATCH_SIZE = 1000


class TransferCountMismatch(RuntimeError):
    pass


def copy_store(source: VectorStore, target: VectorStore, target_folder: Path) -> int:
    """Empty ``target``, copy every chunk of ``source`` (same ids, texts, metadata and vectors), check
    the counts and save ``target``; returns the count. On any error the target is discarded unsaved."""
    try:
        target.refresh(writing=True)  # a server store: take its write lock, like any writer
        target.clear()
        copied = 0
        for chunks, vectors in source.export(BATCH_SIZE):
            target.add([StoredChunk(c.doc_id, c.page_content, dict(c.metadata)) for c in chunks], vectors)
            copied += len(chunks)
        expected, stored = len(source), len(target)
        if not expected == copied == stored:
            raise TransferCountMismatch(f"copied {copied} of {expected} chunks, the target holds {stored}: not switched")
        target.save(target_folder)
    finally:
        target.discard()  # unsaved changes (on error) go; a server store closes its connection
    return stored
