"""Ingestion benchmark: how fast a folder of documents becomes a searchable knowledge base.

    python bench/bench_ingest.py                       # the bundled samples
    python bench/bench_ingest.py ../shared/corpus/chatchat-samples --workers 2
    python bench/bench_ingest.py ../shared/corpus/chatchat-samples --compare   # against --plain

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
    parser.add_argument(
        "--plain",
        action="store_true",
        help="the baseline: the same pipeline without its speed work (ONNX Runtime OCR, float32 "
        "embeddings in batches of 64, no reuse of vectors between files)",
    )
    parser.add_argument(
        "--compare", action="store_true", help="run the baseline, then the default, and print the ratio"
    )
    args = parser.parse_args()
    if args.compare:
        compare(args)
        return
    if args.plain:
        os.environ["CHATCHAT_OCR_BACKEND"] = "onnxruntime"
        os.environ["CHATCHAT_EMBEDDING_DTYPE"] = "float32"
        os.environ["CHATCHAT_EMBEDDING_BATCH_SIZE"] = "64"
        from server.knowledge_base.embeddings.background import BackgroundEmbedder

        BackgroundEmbedder.MAX_REMEMBERED = 0

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


def compare(args) -> None:
    """Each configuration in its own process, so neither inherits the other's loaded models."""
    import re
    import subprocess

    base = [sys.executable, __file__, args.folder] + (["--workers", str(args.workers)] if args.workers else [])
    seconds = {}
    for label, extra in (("baseline (--plain)", ["--plain"]), ("default", [])):
        print(f"== {label}", flush=True)
        output = subprocess.run(base + extra, check=True, capture_output=True, text=True).stdout
        print(output, end="", flush=True)
        seconds[label] = float(re.search(r"^seconds\s+([\d.]+)", output, re.M).group(1))
    plain, default = seconds.values()
    print(f"== speed-up      x{plain / default:.2f} ({plain:.1f} s -> {default:.1f} s)")


if __name__ == "__main__":
    main()
