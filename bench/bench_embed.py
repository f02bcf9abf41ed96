"""Embedding benchmark: speed of each dtype, and whether retrieval stays the same.

    python bench/bench_embed.py ../shared/corpus/chatchat-samples

Chunks the folder's documents as ingestion does, embeds them in float32 (the reference) and in
each other dtype asked for (default: what ``EMBEDDING_DTYPE=auto`` picks on this machine), and
prints chunks/s, the speed-up, the cosine to the float32 vectors and how many of the float32
top-5 neighbours each chunk keeps (1.0 = retrieval unchanged).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def corpus_chunks(folder: Path, limit: int) -> list[str]:
    from server.knowledge_base.ingest import ParseTask, parse_file
    from server.knowledge_base.service import default_chunking

    options = default_chunking()
    texts: list[str] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() not in (".jpg", ".png")):
        texts += [text for text, _ in parse_file(ParseTask(path.name, str(path), options)).chunks]
    return list(dict.fromkeys(texts))[:limit]  # unique chunks, so neighbour ties do not blur the check


def timed_embed(dtype: str, path: Path, texts: list[str], batch_size: int | None) -> tuple[np.ndarray, float]:
    from server.knowledge_base.embeddings.local import SentenceTransformerBackend

    backend = SentenceTransformerBackend("bench", path, "auto", batch_size, dtype)
    backend.embed(texts[: backend.batch_size])  # warm-up
    started = time.perf_counter()
    vectors = backend.embed(texts)
    return vectors, time.perf_counter() - started


def top_k_overlap(reference: np.ndarray, other: np.ndarray, k: int = 5) -> float:
    ref_top = np.argsort(-(reference @ reference.T), axis=1)[:, 1 : k + 1]
    other_top = np.argsort(-(other @ other.T), axis=1)[:, 1 : k + 1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ref_top, other_top, strict=True)]))


def main() -> None:
    from configs import get_settings
    from server.devices import embedding_dtype, resolve_device
    from server.knowledge_base.embeddings.local import resolve_model_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", default=str(REPO_ROOT / "knowledge_base" / "samples" / "content"))
    parser.add_argument("--limit", type=int, default=1000, help="chunks to embed")
    parser.add_argument("--dtypes", nargs="*", default=None, help="dtypes to compare with float32")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="texts per forward pass (default: EMBEDDING_BATCH_SIZE, by device)"
    )
    args = parser.parse_args()

    settings = get_settings()
    path = resolve_model_path(settings.EMBEDDING_MODEL, settings)
    auto = str(embedding_dtype(resolve_device(settings.EMBEDDING_DEVICE))).removeprefix("torch.")
    dtypes = args.dtypes or ([auto] if auto != "float32" else [])
    texts = corpus_chunks(Path(args.folder), args.limit)
    print(f"{len(texts)} unique chunks of {args.folder}, model {settings.EMBEDDING_MODEL}, auto dtype {auto}")
    batch_size = args.batch_size or settings.EMBEDDING_BATCH_SIZE
    reference, ref_seconds = timed_embed("float32", path, texts, batch_size)
    print(f"float32   {len(texts) / ref_seconds:7.1f} chunks/s")
    for dtype in dtypes:
        vectors, seconds = timed_embed(dtype, path, texts, batch_size)
        cosine = np.sum(vectors * reference, axis=1)
        print(
            f"{dtype:9s} {len(texts) / seconds:7.1f} chunks/s  x{ref_seconds / seconds:.2f}  "
            f"cosine to float32 min {cosine.min():.4f} mean {cosine.mean():.4f}  "
            f"top-5 neighbours kept {top_k_overlap(reference, vectors):.3f}"
        )


if __name__ == "__main__":
    main()
