"""Ingestion benchmark: how fast a folder of documents becomes a searchable knowledge base.

    python bench/bench_ingest.py                       # the bundled samples
    python bench/bench_ingest.py ../shared/corpus/chatchat-samples --workers 2

Copies the folder into a throw-away knowledge-base root, runs the same code path as
`init_database.py --recreate-vs`, and prints files, chunks, seconds, chunks/s, peak RSS
(this process and its parse workers) and the time spent loading/OCR, splitting and embedding.
Load and split times are summed over worker processes, so they can exceed wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class PeakRss:
    """Samples the resident memory of this process plus its children while the run lasts."""

    def __init__(self, interval: float = 0.1):
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                total = self._process.memory_info().rss
                total += sum(child.memory_info().rss for child in self._process.children(recursive=True))
            except Exception:
                continue
            self.peak = max(self.peak, total)
            self._stop.wait(self._interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", default=str(REPO_ROOT / "knowledge_base" / "samples" / "content"))
    parser.add_argument(
        "--workers", type=int, default=None, help="parse processes (default: INGEST_WORKERS; 0 = one per core)"
    )
    parser.add_argument("--embed-model", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary knowledge base and print its path")
    args = parser.parse_args()

    source = Path(args.folder).resolve()
    if not source.is_dir():
        parser.error(f"{source} is not a folder")
    root = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    shutil.copytree(source, root / "bench" / "content")
    os.environ["CHATCHAT_KB_ROOT_PATH"] = str(root)

    from server.db.engine import create_tables
    from server.knowledge_base import service

    create_tables()
    # The embedding model is loaded inside, alongside the first files, and counted: a fresh
    # init_database run pays for it too.
    started = time.perf_counter()
    with PeakRss() as rss:
        report = service.recreate_vector_store("bench", embed_model=args.embed_model, workers=args.workers)
    total = time.perf_counter() - started

    print(f"folder          {source}")
    print(f"files           {len(report.files)} ({report.ingested} ingested, {len(report.failed)} failed)")
    print(f"chunks          {report.chunks}")
    print(f"seconds         {total:.1f} (embedding model load included)")
    print(f"chunks/s        {report.chunks / total:.1f}")
    print(f"peak RSS        {rss.peak / 2**20:.0f} MiB")
    print(f"load+OCR        {report.load_seconds:.1f} s (summed over workers)")
    print(f"split           {report.split_seconds:.1f} s (summed over workers)")
    print(f"embed           {report.embed_seconds:.1f} s (in a thread beside parsing)")
    for name, reason in report.failed.items():
        print(f"failed          {name}: {reason}")
    if args.keep:
        print(f"kept at         {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
