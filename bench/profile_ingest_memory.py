"""Where ingestion's memory goes: RSS and live allocations after N generated files, and their growth per chunk.

    python bench/profile_ingest_memory.py                       # 300 and 1,200 files, hash embedder
    python bench/profile_ingest_memory.py --files 500 2000 --top 20
    python bench/profile_ingest_memory.py --embedder real       # the real model (slow: minutes per 1,000 files)
    python bench/profile_ingest_memory.py --malloc-arena-max 2  # glibc with fewer arenas

A profiling aid, not a benchmark: each N runs in its own process the same ingestion as
`bench_ingest.py --generate N` (same generated corpus, `recreate_vector_store`). By default the
embedding model is swapped for a fast deterministic one (vectors from a hash of the text, of the real
model's dimension), so the run measures the pipeline's own memory in seconds instead of minutes; its
times and chunks/s are meaningless. At the end of the ingestion (after its last checkpoint, embedder
still open) the child records:

- RSS of the process (and of its parser children), peak RSS, and RSS after gc + malloc_trim(0):
  the difference is memory glibc holds but nothing uses (fragmentation);
- tracemalloc's live allocations grouped by the innermost frame in this repository (file:line), so an
  allocation made by a library on our behalf is charged to our line that asked for it;
- the deep size of the structures that can grow with N: the vector store (FAISS index estimated from
  its size), the embedder's remembered vectors, the report, the SQLAlchemy identity maps still alive.

The parent prints each run and, between the smallest and largest N, the growth per chunk of each.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# tracemalloc keeps this many frames per allocation, enough to walk out of libraries into our code.
TRACE_FRAMES = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, nargs="+", default=[300, 1200], help="corpus sizes, one run each")
    parser.add_argument(
        "--embedder",
        choices=("hash", "real"),
        default="hash",
        help="hash: fast deterministic fake vectors (profiling only); real: the configured model",
    )
    parser.add_argument("--top", type=int, default=15, help="allocation sites to list (by growth)")
    parser.add_argument("--no-tracemalloc", action="store_true", help="RSS only (tracemalloc slows runs ~2x)")
    parser.add_argument("--malloc-arena-max", type=int, help="run the children with MALLOC_ARENA_MAX set")
    parser.add_argument("--workers", type=int, default=None, help="parse processes (default: INGEST_WORKERS)")
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)  # a child: one run of N files, JSON out
    args = parser.parse_args()
    if args.run:
        print("RESULT " + json.dumps(profile_one(args.run, args)), flush=True)
        return
    results = []
    for files in sorted(set(args.files)):
        results.append(run_child(files, args))
        print_run(results[-1], args.top)
    if len(results) > 1:
        print_growth(results[0], results[-1], args.top)


# ---- the parent -------------------------------------------------------------------------------------


def run_child(files: int, args) -> dict:
    command = [sys.executable, __file__, "--run", str(files), "--embedder", args.embedder]
    command += ["--no-tracemalloc"] if args.no_tracemalloc else []
    command += ["--workers", str(args.workers)] if args.workers is not None else []
    env = dict(os.environ)
    if args.malloc_arena_max:
        env["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)
    print(f"== {files} files ({args.embedder} embedder) ...", file=sys.stderr, flush=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"the run of {files} files failed:\n{done.stderr[-3000:]}")
    output = done.stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def _mib(value: float) -> str:
    return f"{value / 2**20:8.1f} MiB"


def print_run(result: dict, top: int) -> None:
    print(f"\n== {result['files']} files, {result['chunks']} chunks ({result['embedder']} embedder)")
    print(f"seconds              {result['seconds']:.1f}")
    print(f"rss_children (peak)  {_mib(result['rss_children'])}")
    for name in ("rss_end", "rss_peak", "rss_after_trim", "traced_current", "traced_peak"):
        if name in result:
            print(f"{name:20} {_mib(result[name])}")
    print("structures (deep size at the end of ingestion):")
    for name, size in result["structures"].items():
        print(f"  {name:32} {_mib(size)}")
    if result.get("components"):
        print("live allocations by component (tracemalloc):")
        for name, size in sorted(result["components"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:32} {_mib(size)}")
    sys.stdout.flush()


def print_growth(small: dict, large: dict, top: int) -> None:
    chunks = large["chunks"] - small["chunks"]
    print(f"\n== growth from {small['files']} to {large['files']} files: {chunks} more chunks, bytes per chunk")
    for name in ("rss_end", "rss_peak", "rss_after_trim", "traced_current", "rss_children"):
        if name in small and name in large:
            print(f"{name:34} {(large[name] - small[name]) / chunks:9.0f}")
    print("structures:")
    for name in large["structures"]:
        grown = large["structures"][name] - small["structures"].get(name, 0)
        print(f"  {name:32} {grown / chunks:9.0f}")
    if large.get("components"):
        print("components (tracemalloc):")
        names = set(large["components"]) | set(small["components"])
        grown = {n: large["components"].get(n, 0) - small["components"].get(n, 0) for n in names}
        for name, size in sorted(grown.items(), key=lambda kv: -kv[1]):
            print(f"  {name:32} {size / chunks:9.0f}")
        print(f"top {top} allocation sites by growth:")
        sites = set(large["sites"]) | set(small["sites"])
        grown = {s: large["sites"].get(s, 0) - small["sites"].get(s, 0) for s in sites}
        for site, size in sorted(grown.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {size / chunks:9.0f}  {site}")


# ---- a child: one ingestion -------------------------------------------------------------------------


def install_hash_embeddings() -> None:
    """Make get_embeddings return HashEmbeddingBackend (profiling only): the real backend just tells the dimension."""
    import numpy as np

    from server.knowledge_base import embeddings
    from server.knowledge_base.embeddings.base import EmbeddingBackend

    class HashEmbeddingBackend(EmbeddingBackend):
        """Deterministic unit vectors from a text's SHA-256: a stand-in for the model, never for results."""

        dtype = "hash-profiling"  # a namespace of its own in the ingest cache

        def __init__(self, name: str, dimension: int):
            self.name, self.dimension = name, dimension

        def embed(self, texts: list[str], *, is_query: bool = False) -> np.ndarray:
            rows = np.empty((len(texts), self.dimension), dtype=np.float32)
            for row, text in enumerate(texts):
                seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
                rows[row] = np.random.default_rng(seed).standard_normal(self.dimension)
            return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    make_real = embeddings._create_backend

    def create(name, settings):
        real = make_real(name, settings)
        return HashEmbeddingBackend(real.name, real.dimension)

    embeddings._create_backend = create


class _RssSampler:
    """Peak RSS of this process and its children, sampled every 200 ms."""

    def __init__(self):
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        self.children_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def children_rss(self) -> int:
        total = 0
        for child in self.process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except Exception:  # a child that just ended
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            children = self.children_rss()
            self.children_peak = max(self.children_peak, children)
            self.peak = max(self.peak, self.process.memory_info().rss + children)
            self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def profile_one(files: int, args) -> dict:
    root = Path(tempfile.mkdtemp(prefix="profile-ingest-"))
    try:
        return _profile_in(root, files, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _profile_in(root: Path, files: int, args) -> dict:
    from bench_ingest import generate

    generate(root / "bench" / "content", files)
    os.environ["CHATCHAT_KB_ROOT_PATH"] = str(root)
    if args.embedder == "hash":
        install_hash_embeddings()

    from server.db.engine import create_tables
    from server.knowledge_base import service
    from server.knowledge_base.embeddings.background import BackgroundEmbedder
    from server.memory import return_free_heap

    create_tables()
    _warm_up(service)
    result: dict = {"files": files, "embedder": args.embedder, "structures": {}}
    sampler = _RssSampler()
    close = BackgroundEmbedder.close

    def measure_then_close(embedder):
        # The end of ingest_files' work: last checkpoint done, the embedder's memory still alive.
        result["rss_end"] = sampler.process.memory_info().rss
        result["structures"]["embedder remembered vectors"] = deep_size(
            getattr(embedder, "_memory", None) or getattr(embedder, "_vectors", None)
        )
        result["structures"]["SQLAlchemy identity maps alive"] = sqlalchemy_identity_bytes()
        if tracemalloc.is_tracing():
            result.update(traced(tracemalloc.take_snapshot()))
            result["traced_current"], result["traced_peak"] = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        close(embedder)

    BackgroundEmbedder.close = measure_then_close
    if not args.no_tracemalloc:
        tracemalloc.start(TRACE_FRAMES)
    started = time.perf_counter()
    report = service.recreate_vector_store("bench", workers=args.workers)
    result["seconds"] = time.perf_counter() - started
    sampler.stop()
    result["rss_peak"], result["rss_children"] = sampler.peak, sampler.children_peak
    result["chunks"] = report.chunks
    result["structures"]["report"] = deep_size(report)
    result["structures"].update(store_sizes(service))
    gc.collect()
    return_free_heap()
    result["rss_after_trim"] = sampler.process.memory_info().rss
    return result


def _warm_up(service) -> None:
    """Load what every run loads once (model backend, jieba's dictionary) before tracing starts: it does
    not grow with N, and tracing torch's import would take minutes."""
    from server.knowledge_base.keyword_index import tokenize

    service.get_embeddings().embed(["warm up"])
    tokenize("仓库管理 warehouse")


def store_sizes(service) -> dict[str, int]:
    """The vector store's Python objects (deep) and its FAISS index (native: not seen by tracemalloc)."""
    kb = service.get_kb("bench")
    backend = service.get_embeddings(kb.embed_model)

    def measure(store) -> dict[str, int]:
        sizes = {"vector store objects (A)": deep_size(store, skip_native=True)}
        index = getattr(store, "index", None)
        if index is not None:  # IndexIDMap2 over a flat index: the vectors plus two id maps
            sizes["vector store FAISS index (A)"] = index.ntotal * (store.dimension * 4 + 24)
        return sizes

    return service._read_store(kb, backend, measure)


def sqlalchemy_identity_bytes() -> int:
    """ORM objects still held by open sessions (a leak if ingestion left any)."""
    import warnings

    from sqlalchemy.orm import Session

    with warnings.catch_warnings():  # isinstance() on some of torch's lazy objects warns
        warnings.simplefilter("ignore")
        sessions = [obj for obj in gc.get_objects() if isinstance(obj, Session)]
    return sum(deep_size(list(session.identity_map.values())) for session in sessions)


def deep_size(root, skip_native: bool = False) -> int:
    """Bytes of ``root`` and everything it references that is not a module, class or function."""
    import types

    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)
    seen: set[int] = set()
    stack, total = [root], 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        if skip_native and type(obj).__module__.startswith("faiss"):
            continue
        total += sys.getsizeof(obj, 0)
        base = getattr(obj, "base", None)  # a numpy view keeps its whole base array alive
        if base is not None and type(obj).__module__ == "numpy":
            stack.append(base)
        stack.extend(gc.get_referents(obj))
    return total


COMPONENTS = (  # first match of a path fragment in the charged frame
    ("vector_stores/", "vector store (A)"),
    ("keyword_index/", "vector store (A)"),
    ("db/repositories", "SQLAlchemy rows"),
    ("ingest_cache/", "ingest cache"),
    ("embeddings/background.py", "embedder memory/queue"),
    ("profile_ingest_memory.py", "hash embedder (profiling)"),
    ("embeddings/", "embedding backend"),
    ("knowledge_base/ingest.py", "parsed files (received)"),
    ("knowledge_base/service.py", "service: writer/report"),
    ("knowledge_base/duplicates.py", "duplicates bookkeeping"),
    ("knowledge_base/loaders", "loaders"),
    ("knowledge_base/splitters", "splitters"),
    ("jieba", "jieba"),
    ("logging", "logging"),
)


def traced(snapshot) -> dict:
    """Live bytes by our innermost frame (file:line) and by component."""
    snapshot = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    repo = str(REPO_ROOT) + os.sep
    sites: dict[str, int] = {}
    for stat in snapshot.statistics("traceback"):
        site = _charged_frame(stat.traceback, repo)
        sites[site] = sites.get(site, 0) + stat.size
    components: dict[str, int] = {}
    for site, size in sites.items():
        name = next((label for fragment, label in COMPONENTS if fragment in site), "other (libraries, imports)")
        components[name] = components.get(name, 0) + size
    return {"sites": sites, "components": components}


def _charged_frame(traceback, repo: str) -> str:
    """The innermost frame in this repository (else the innermost frame), as path:line."""
    frames = list(reversed(traceback))  # tracemalloc lists the oldest frame first
    for frame in frames:
        if frame.filename.startswith(repo):
            return f"{frame.filename.removeprefix(repo)}:{frame.lineno}"
    frame = frames[0]
    for marker in ("site-packages/", "lib/python3"):
        if marker in frame.filename:
            return f"{frame.filename.split(marker, 1)[1]}:{frame.lineno}"
    return f"{frame.filename}:{frame.lineno}"


if __name__ == "__main__":
    main()
