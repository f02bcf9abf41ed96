"""search_docs benchmark against a real API server process (it starts its own).

    python bench/bench_search.py                                   # ../shared/corpus/chatchat-samples
    python bench/bench_search.py /path/to/docs --queries 300 --clients 8 --seconds 20 --with-images

1. starts ``python -m server.api`` on a free port with a throw-away data root;
2. builds a knowledge base by uploading every supported file of the folder through
   ``/knowledge_base/upload_docs`` (pictures need OCR and are skipped unless --with-images);
3. one client: median / p95 / max latency of ``search_docs`` over --queries queries
   (sentences taken from the documents themselves, so hits are meaningful);
4. --clients concurrent clients for --seconds: requests per second and latency under load;
5. with --during-upload: one client's latency while the same files are uploaded into a second
   knowledge base (ingestion and search share the embedding model and the CPU).
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.helpers.api_server import start_api_server  # noqa: E402

DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "corpus" / "chatchat-samples"
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp"}
TEXT_EXTS = {".md", ".txt"}
KB_NAME = "bench_samples"


def corpus_files(folder: Path, with_images: bool) -> list[Path]:
    from server.knowledge_base.loaders import SUPPORTED_EXTS

    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix.lower() in SUPPORTED_EXTS]
    return [p for p in files if with_images or p.suffix.lower() not in IMAGE_EXTS]


def sample_queries(files: list[Path], count: int, seed: int = 7) -> list[str]:
    """Sentences of 15-120 characters from the text files, sampled with a fixed seed."""
    sentences = []
    for path in files:
        if path.suffix.lower() in TEXT_EXTS:
            text = path.read_text(errors="ignore")
            sentences += [s.strip() for s in re.split(r"[。！？.!?\n]+", text) if 15 <= len(s.strip()) <= 120]
    if not sentences:
        sentences = ["如何安装", "知识库问答", "embedding model", "FAQ"]
    rng = random.Random(seed)
    return [rng.choice(sentences) for _ in range(count)]


def build_kb(client: httpx.Client, folder: Path, files: list[Path], kb_name: str = KB_NAME) -> tuple[float, int]:
    answer = client.post("/knowledge_base/create_knowledge_base", json={"knowledge_base_name": kb_name}).json()
    assert answer["code"] == 200, answer
    started = time.perf_counter()
    failures = 0
    for path in files:
        name = path.relative_to(folder).as_posix()
        with open(path, "rb") as handle:
            response = client.post(
                "/knowledge_base/upload_docs",
                data={"knowledge_base_name": kb_name},
                files=[("files", (name, handle))],
            )
        failed = response.json()["data"]["failed_files"]
        if failed:
            failures += 1
            print(f"  failed: {failed}")
    return time.perf_counter() - started, failures


def search_once(client: httpx.Client, query: str, top_k: int) -> float:
    started = time.perf_counter()
    response = client.post(
        "/knowledge_base/search_docs", json={"knowledge_base_name": KB_NAME, "query": query, "top_k": top_k}
    )
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    if not isinstance(response.json(), list):
        raise RuntimeError(f"unexpected answer: {response.text[:200]}")
    return elapsed


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def describe(latencies: list[float]) -> str:
    ms = [v * 1000 for v in latencies]
    return (
        f"median {statistics.median(ms):.1f} ms, p95 {percentile(ms, 0.95):.1f} ms, "
        f"p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms"
    )


def run_load(url: str, queries: list[str], clients: int, seconds: float, top_k: int) -> tuple[list[float], int]:
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def worker(offset: int) -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=120) as own:
            index = offset
            while time.perf_counter() < deadline:
                try:
                    elapsed = search_once(own, queries[index % len(queries)], top_k)
                except Exception:
                    with lock:
                        errors += 1
                    continue
                finally:
                    index += clients
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--with-images", action="store_true", help="also ingest pictures (OCR, slow on a CPU)")
    parser.add_argument("--during-upload", action="store_true", help="also measure searches during an ingestion")
    args = parser.parse_args()

    folder = args.folder.resolve()
    files = corpus_files(folder, args.with_images)
    queries = sample_queries(files, args.queries)
    data_root = Path(tempfile.mkdtemp(prefix="bench_search_"))
    try:
        run_benchmark(data_root, folder, files, queries, args)
    finally:
        shutil.rmtree(data_root, ignore_errors=True)


def count_chunks(client: httpx.Client) -> int:
    # An empty threshold filter (1.0) and a large top_k return every chunk once.
    body = {"knowledge_base_name": KB_NAME, "query": "a", "top_k": 10_000, "score_threshold": 1.0}
    return len(client.post("/knowledge_base/search_docs", json=body).json())


def run_benchmark(data_root: Path, folder: Path, files: list[Path], queries: list[str], args) -> None:
    with start_api_server(data_root) as server, httpx.Client(base_url=server.url, timeout=600) as client:
        print(f"server {server.url}, corpus {folder} ({len(files)} files)")
        seconds, failures = build_kb(client, folder, files)
        print(f"ingest: {len(files)} files ({failures} failed), {count_chunks(client)} chunks, {seconds:.1f} s")

        for query in queries[:10]:  # warm up the model and the store cache
            search_once(client, query, args.top_k)
        latencies = [search_once(client, query, args.top_k) for query in queries]
        print(f"sequential search_docs, {len(latencies)} queries, top_k={args.top_k}: {describe(latencies)}")
        print(f"  = {len(latencies) / sum(latencies):.1f} requests/s from one client")

        loaded, errors = run_load(server.url, queries, args.clients, args.seconds, args.top_k)
        rate = len(loaded) / args.seconds
        print(
            f"{args.clients} concurrent clients for {args.seconds:.0f} s: "
            f"{len(loaded)} requests, {errors} errors, {rate:.1f} requests/s"
        )
        if loaded:
            print(f"  latency under load: {describe(loaded)}")
        if args.during_upload:
            search_during_upload(server.url, client, folder, files, queries, args.top_k)


def search_during_upload(url: str, client: httpx.Client, folder: Path, files: list[Path], queries, top_k: int) -> None:
    upload: dict = {}

    def ingest() -> None:
        with httpx.Client(base_url=url, timeout=600) as own:
            upload["seconds"], upload["failures"] = build_kb(own, folder, files, KB_NAME + "_busy")

    thread = threading.Thread(target=ingest)
    thread.start()
    latencies, index = [], 0
    while thread.is_alive():
        latencies.append(search_once(client, queries[index % len(queries)], top_k))
        index += 1
    thread.join()
    print(
        f"during an upload of the same files ({upload['seconds']:.1f} s, {upload['failures']} failed): "
        f"{len(latencies)} searches"
    )
    if latencies:
        print(f"  latency during ingestion: {describe(latencies)}")


if __name__ == "__main__":
    main()
