"""Retrieval benchmark on the dev sets in ../shared/eval: hit@1/3/5 and MRR per search mode, and
search_docs latency, against a real API server process (it starts its own, with a throw-away data root).

    python bench/bench_retrieval.py                          # cmrc and squad, every question
    python bench/bench_retrieval.py --limit 50 --latency-chunks 0       # a quick look
    python bench/bench_retrieval.py --datasets squad --reranker-model /path/to/cross-encoder
    python bench/bench_retrieval.py --json                   # only the one-line JSON summary on stdout

Measured as ../shared/eval/README.md says: every passage becomes one .txt file (CMRC:
<context_id>.txt, SQuAD: <title>_<paragraph index>.txt) in a fresh knowledge base, uploaded through
/knowledge_base/upload_docs with the default settings (50 files per request); each question goes to
/knowledge_base/search_docs with score_threshold 1.0, and a hit is a result whose metadata.source is
the question's own passage file.

Each question is asked once per mode with top_k 5; hit@1, hit@3 and hit@5 come from the first 1, 3
and 5 results of that list, MRR from the rank of the first hit in it (0 without one). hit@3 is the
README's figure (top_k 3) because a top_k 5 list starts with the top_k 3 list: the benchmark checks
that on the first questions of each mode, and asks every question again with top_k 3 for a mode
where it does not hold.

Modes: vector, keyword, hybrid (search_mode per request, no reranker), and hybrid+rerank when
--reranker-model is given or USE_RERANKER is set: a second server over the same data root with
USE_RERANKER on asks the same knowledge bases in hybrid mode.

Latency (search_docs, hybrid mode, top_k 3, score_threshold 1.0): per dataset, one client's
p50/p95 over its hybrid evaluation requests and --clients concurrent clients for --load-seconds;
then the same in a separate knowledge base of about --latency-chunks chunks (the CMRC and SQuAD
passages, then copies of the SQuAD passages under other file names), which the targets are for.
Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.helpers.api_server import start_api_server  # noqa: E402

DEFAULT_EVAL_DIR = REPO_ROOT.parent / "shared" / "eval"
DATASET_FILES = {"cmrc": "cmrc2018_trial.json", "squad": "squad_train_slice.json"}
MODES = ("vector", "keyword", "hybrid")
RERANK_MODE = "hybrid+rerank"
THRESHOLD = 1.0  # the README's score_threshold: no filtering
EVAL_TOP_K = 5
README_TOP_K = 3
VERIFY_QUESTIONS = 5  # questions per mode whose top_k 5 list is checked against a top_k 3 request
UPLOAD_BATCH = 50
WARMUP_QUERIES = 10
TARGETS = {"hit@3": 0.95, "p50_ms": 15.0, "p95_ms": 40.0, "rps": 60.0}


@dataclass
class Passage:
    name: str  # the .txt file name the README gives it
    text: str


@dataclass
class Question:
    text: str
    source: str  # the file name of its passage


@dataclass
class Dataset:
    key: str
    passages: list[Passage]
    questions: list[Question]


@dataclass
class ModeResult:
    mode: str
    ranks: list[int | None]  # 1-based rank of the first hit in the top_k 5 list
    ranks_at_3: list[int | None]  # the same from the top_k 3 list (derived or asked)
    latencies: list[float]  # seconds per top_k 5 request
    derived: bool  # hit@1/hit@3 from the first 3 of the top_k 5 lists
    checked: int  # questions whose top_k 5 prefix was compared with a top_k 3 request

    def metrics(self) -> dict:
        count = len(self.ranks) or 1
        return {
            "hit@1": sum(r is not None and r <= 1 for r in self.ranks_at_3) / count,
            "hit@3": sum(r is not None and r <= 3 for r in self.ranks_at_3) / count,
            "hit@5": sum(r is not None for r in self.ranks) / count,
            "mrr": sum(1 / r for r in self.ranks if r is not None) / count,
            "mean_ms": 1000 * statistics.fmean(self.latencies) if self.latencies else 0.0,
            "hit@3_source": "top_k 5 prefix (checked)" if self.derived else "top_k 3 requests",
        }


@dataclass
class DatasetResult:
    dataset: Dataset
    questions: list[Question]
    chunks: int = 0
    ingest_s: float = 0.0
    failed: dict = field(default_factory=dict)
    modes: dict[str, ModeResult] = field(default_factory=dict)
    load: dict = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- datasets ------------------------------------------------------------------------------------


def load_cmrc(path: Path) -> Dataset:
    passages, questions = [], []
    for entry in json.loads(path.read_text(encoding="utf-8")):
        name = f"{entry['context_id']}.txt"
        passages.append(Passage(name, entry["context_text"]))
        questions += [Question(qa["query_text"], name) for qa in entry["qas"]]
    return Dataset("cmrc", passages, questions)


def load_squad(path: Path) -> Dataset:
    passages, questions = [], []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for index, paragraph in enumerate(article["paragraphs"]):
            name = f"{article['title']}_{index}.txt"
            passages.append(Passage(name, paragraph["context"]))
            questions += [Question(qa["question"], name) for qa in paragraph["qas"]]
    return Dataset("squad", passages, questions)


def load_dataset(eval_dir: Path, key: str) -> Dataset:
    loader = {"cmrc": load_cmrc, "squad": load_squad}[key]
    return loader(eval_dir / DATASET_FILES[key])


# ---- API calls -----------------------------------------------------------------------------------


def create_kb(client: httpx.Client, kb: str) -> None:
    answer = client.post("/knowledge_base/create_knowledge_base", json={"knowledge_base_name": kb}).json()
    if answer.get("code") != 200:
        raise RuntimeError(f"create_knowledge_base {kb}: {answer}")


def upload(client: httpx.Client, kb: str, passages: list[Passage]) -> tuple[float, dict]:
    """Upload in batches of UPLOAD_BATCH files with upload_docs' defaults: seconds, failed files."""
    started, failed = time.perf_counter(), {}
    for start in range(0, len(passages), UPLOAD_BATCH):
        batch = passages[start : start + UPLOAD_BATCH]
        files = [("files", (p.name, p.text.encode("utf-8"), "text/plain")) for p in batch]
        response = client.post("/knowledge_base/upload_docs", data={"knowledge_base_name": kb}, files=files)
        response.raise_for_status()
        failed.update(response.json()["data"]["failed_files"])
    return time.perf_counter() - started, failed


def count_chunks(client: httpx.Client, kb: str) -> int:
    # vector mode with threshold 1.0 and a top_k above the size returns every chunk once
    body = {"knowledge_base_name": kb, "query": "a", "top_k": 10_000, "score_threshold": 1.0, "search_mode": "vector"}
    return len(client.post("/knowledge_base/search_docs", json=body).json())


def search(client: httpx.Client, kb: str, query: str, top_k: int, mode: str) -> tuple[list[dict], float]:
    body = {"knowledge_base_name": kb, "query": query, "top_k": top_k, "score_threshold": THRESHOLD}
    body["search_mode"] = mode
    started = time.perf_counter()
    response = client.post("/knowledge_base/search_docs", json=body)
    elapsed = time.perf_counter() - started
    docs = response.json() if response.status_code == 200 else None
    if not isinstance(docs, list):
        raise RuntimeError(f"search_docs answered {response.status_code}: {response.text[:300]}")
    return docs, elapsed


# ---- retrieval quality ---------------------------------------------------------------------------


def first_hit(docs: list[dict], source: str, depth: int) -> int | None:
    for rank, doc in enumerate(docs[:depth], start=1):
        if doc["metadata"].get("source") == source:
            return rank
    return None


def prefix_holds(client: httpx.Client, kb: str, question: Question, mode: str, top5: list[dict]) -> bool:
    top3, _ = search(client, kb, question.text, README_TOP_K, mode)
    return [d["id"] for d in top3] == [d["id"] for d in top5[:README_TOP_K]]


def evaluate_mode(client: httpx.Client, kb: str, questions: list[Question], mode: str, label: str) -> ModeResult:
    ranks, ranks_at_3, latencies, derived, checked = [], [], [], True, 0
    for index, question in enumerate(questions):
        docs, elapsed = search(client, kb, question.text, EVAL_TOP_K, mode)
        latencies.append(elapsed)
        ranks.append(first_hit(docs, question.source, EVAL_TOP_K))
        ranks_at_3.append(first_hit(docs, question.source, README_TOP_K))
        if index < VERIFY_QUESTIONS:
            checked += 1
            derived = prefix_holds(client, kb, question, mode, docs) and derived
    if not derived:
        log(f"  {label}: a top_k 5 list did not start with the top_k 3 list; asking every question with top_k 3")
        ranks_at_3 = [
            first_hit(search(client, kb, q.text, README_TOP_K, mode)[0], q.source, README_TOP_K) for q in questions
        ]
    return ModeResult(label, ranks, ranks_at_3, latencies, derived, checked)


def evaluate_modes(client: httpx.Client, result: DatasetResult, kb: str, modes: dict[str, str]) -> None:
    """``modes`` maps a row label to the search_mode asked for it."""
    warm_up(client, kb, [q.text for q in result.questions])
    for label, mode in modes.items():
        started = time.perf_counter()
        result.modes[label] = evaluate_mode(client, kb, result.questions, mode, label)
        log(
            f"  {result.dataset.key} {label}: {len(result.questions)} questions in {time.perf_counter() - started:.1f} s"
        )


# ---- latency -------------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def latency_stats(latencies: list[float]) -> dict:
    if not latencies:
        return {"count": 0}
    ms = [v * 1000 for v in latencies]
    return {"count": len(ms), "p50_ms": percentile(ms, 0.5), "p95_ms": percentile(ms, 0.95), "max_ms": max(ms)}


def warm_up(client: httpx.Client, kb: str, queries: list[str]) -> None:
    for query in queries[:WARMUP_QUERIES]:  # loads the store, the model and the keyword index
        search(client, kb, query, README_TOP_K, "hybrid")


def run_load(url: str, kb: str, queries: list[str], clients: int, seconds: float) -> dict:
    """``clients`` threads, each with its own httpx client, asking hybrid top_k 3 for ``seconds``."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def worker(offset: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as own:
            index = offset
            while time.perf_counter() < deadline:
                query, index = queries[index % len(queries)], index + clients
                try:
                    elapsed = search(own, kb, query, README_TOP_K, "hybrid")[1]
                except Exception:
                    with lock:
                        errors[0] += 1
                    continue
                with lock:
                    latencies.append(elapsed)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {"clients": clients, "seconds": elapsed, "requests": len(latencies), "errors": errors[0],
            "rps": len(latencies) / elapsed, **{f"load_{k}": v for k, v in latency_stats(latencies).items()}}  # fmt: skip


def single_client(client: httpx.Client, kb: str, queries: list[str]) -> dict:
    warm_up(client, kb, queries)
    return latency_stats([search(client, kb, query, README_TOP_K, "hybrid")[1] for query in queries])


# ---- the runs ------------------------------------------------------------------------------------


def kb_name(key: str) -> str:
    return f"bench_retrieval_{key}"


def run_dataset(client: httpx.Client, url: str, dataset: Dataset, args) -> DatasetResult:
    questions = dataset.questions[: args.limit] if args.limit else dataset.questions
    result = DatasetResult(dataset, questions)
    kb = kb_name(dataset.key)
    create_kb(client, kb)
    log(f"{dataset.key}: uploading {len(dataset.passages)} passages")
    result.ingest_s, result.failed = upload(client, kb, dataset.passages)
    result.chunks = count_chunks(client, kb)
    log(f"{dataset.key}: {result.chunks} chunks in {result.ingest_s:.1f} s; asking {len(questions)} questions")
    evaluate_modes(client, result, kb, {mode: mode for mode in MODES})
    if args.load_seconds > 0:
        result.load = run_load(url, kb, [q.text for q in questions], args.clients, args.load_seconds)
    return result


def latency_passages(datasets: list[Dataset]) -> tuple[list[Passage], list[Passage]]:
    """The unique passages (SQuAD first: the pool that copies come from) and the copy pool."""
    squad = [d for d in datasets if d.key == "squad"]
    pool = squad[0].passages if squad else [p for d in datasets for p in d.passages]
    rest = [p for d in datasets if d.key != "squad" for p in d.passages] if squad else []
    return pool, rest


def copies(pool: list[Passage], count: int) -> list[Passage]:
    """``count`` copies of pool passages under new names, a passage's copies side by side so one
    upload request embeds each text once (ingestion reuses the vector of a repeated text)."""
    made = [(i % len(pool), i // len(pool) + 1) for i in range(count)]
    return [Passage(f"copy{n}_{pool[i].name}", pool[i].text) for i, n in sorted(made)]


def upload_until(client: httpx.Client, kb: str, passages: list[Passage], target: int) -> tuple[float, dict, int]:
    """Upload batch by batch until the knowledge base has ``target`` chunks: seconds, failed files, files sent."""
    seconds, failed, sent = 0.0, {}, 0
    for start in range(0, len(passages), UPLOAD_BATCH):
        if count_chunks(client, kb) >= target:
            break
        batch = passages[start : start + UPLOAD_BATCH]
        took, batch_failed = upload(client, kb, batch)
        seconds, sent = seconds + took, sent + len(batch)
        failed.update(batch_failed)
    return seconds, failed, sent


def build_latency_kb(client: httpx.Client, datasets: list[Dataset], target: int) -> dict:
    kb = kb_name("latency")
    create_kb(client, kb)
    pool, rest = latency_passages(datasets)
    seconds, failed, sent = upload_until(client, kb, pool, target)
    per_passage = max(count_chunks(client, kb) / max(sent, 1), 1e-9)
    more, failed_more, sent_more = upload_until(client, kb, rest, target)
    extra = max(0, math.ceil((target - count_chunks(client, kb)) / per_passage))
    last, failed_last = upload(client, kb, copies(pool, extra))
    return {"kb": kb, "files": sent + sent_more + extra, "copies": extra, "chunks": count_chunks(client, kb),
            "build_s": seconds + more + last, "failed": {**failed, **failed_more, **failed_last}}  # fmt: skip


def latency_queries(datasets: list[Dataset], count: int, seed: int = 7) -> list[str]:
    texts = [q.text for d in datasets for q in d.questions]
    return random.Random(seed).sample(texts, min(count, len(texts)))


def run_latency_kb(client: httpx.Client, url: str, datasets: list[Dataset], args) -> dict:
    log(f"latency knowledge base: building about {args.latency_chunks} chunks")
    built = build_latency_kb(client, datasets, args.latency_chunks)
    log(f"latency knowledge base: {built['chunks']} chunks from {built['files']} files in {built['build_s']:.1f} s")
    queries = latency_queries(datasets, args.latency_queries)
    result = {**built, "queries": len(queries), **single_client(client, built["kb"], queries)}
    if args.load_seconds > 0:
        result.update(run_load(url, built["kb"], queries, args.clients, args.load_seconds))
    return result


def warm_up_server(client: httpx.Client, datasets: list[Dataset]) -> None:
    """One small upload and search first, so that no timed figure includes loading the models."""
    kb, unique = kb_name("warmup"), {d.key: d for d in datasets}.values()
    create_kb(client, kb)
    upload(client, kb, [Passage(f"warmup_{d.key}.txt", d.passages[0].text) for d in unique])
    warm_up(client, kb, [q.text for d in unique for q in d.questions[:3]])


def rerank_settings(args) -> dict[str, str] | None:
    """Environment for the reranking server, or None when no reranker is asked for."""
    from configs import get_settings

    settings = get_settings()
    if not (args.reranker_model or settings.USE_RERANKER):
        return None
    model = args.reranker_model or settings.RERANKER_MODEL
    if Path(model).expanduser().exists():
        model = str(Path(model).expanduser().resolve())
    return {"CHATCHAT_USE_RERANKER": "true", "CHATCHAT_RERANKER_MODEL": model}


def run_rerank(data_root: Path, results: list[DatasetResult], env: dict[str, str]) -> None:
    log(f"hybrid+rerank: a second server with {env['CHATCHAT_RERANKER_MODEL']}")
    with start_api_server(data_root, **env) as server, httpx.Client(base_url=server.url, timeout=600) as client:
        for result in results:
            evaluate_modes(client, result, kb_name(result.dataset.key), {RERANK_MODE: "hybrid"})


def run_all(data_root: Path, datasets: list[Dataset], latency_sets: list[Dataset], args) -> tuple[list, dict]:
    results, latency = [], {}
    # The reranker stays off here whatever the settings say, so vector/keyword/hybrid measure one thing each.
    with (
        start_api_server(data_root, **{**args.server_env, "CHATCHAT_USE_RERANKER": "false"}) as server,
        httpx.Client(base_url=server.url, timeout=600) as client,
    ):
        log(f"server {server.url}, data root {data_root}")
        warm_up_server(client, datasets + latency_sets)
        for dataset in datasets:
            results.append(run_dataset(client, server.url, dataset, args))
        if args.latency_chunks > 0 and latency_sets:
            latency = run_latency_kb(client, server.url, latency_sets, args)
    env = rerank_settings(args)
    if env:
        run_rerank(data_root, results, {**args.server_env, **env})
    return results, latency


# ---- report --------------------------------------------------------------------------------------


def verdict(value: float | None, target: float, higher_is_better: bool) -> str:
    if value is None:
        return "n/a"
    return "PASS" if (value >= target if higher_is_better else value <= target) else "FAIL"


def headline_mode(results: list[DatasetResult]) -> str:
    """The mode a request without search_mode gets under the current settings: the README's figure."""
    from configs import get_settings

    settings = get_settings()
    has_rerank = any(RERANK_MODE in r.modes for r in results)
    return RERANK_MODE if settings.USE_RERANKER and has_rerank else settings.SEARCH_MODE


def mode_table(result: DatasetResult, headline: str) -> list[str]:
    header = f"  {'mode':<14}{'hit@1':>7}{'hit@3':>7}{'hit@5':>7}{'MRR':>7}{'mean ms':>9}  hit@3 >= {TARGETS['hit@3']}"
    lines = [header]
    for label, mode in result.modes.items():
        m = mode.metrics()
        mark = "  <- README figure" if label == headline else ""
        lines.append(
            f"  {label:<14}{m['hit@1']:>7.3f}{m['hit@3']:>7.3f}{m['hit@5']:>7.3f}{m['mrr']:>7.3f}"
            f"{m['mean_ms']:>9.1f}  {verdict(m['hit@3'], TARGETS['hit@3'], True)}{mark}"
        )
    return lines


def source_note(result: DatasetResult) -> str:
    parts = []
    for label, mode in result.modes.items():
        how = f"first 3 of top_k 5 ({mode.checked} checked)" if mode.derived else "top_k 3 requests"
        parts.append(f"{label}: {how}")
    return "  hit@1/hit@3 from " + "; ".join(parts)


def latency_lines(single: dict, load: dict, indent: str = "  ") -> list[str]:
    lines = []
    if single.get("count"):
        lines.append(
            f"{indent}one client, {single['count']} requests: p50 {single['p50_ms']:.1f} ms "
            f"(target <= {TARGETS['p50_ms']:.0f}: {verdict(single['p50_ms'], TARGETS['p50_ms'], False)}), "
            f"p95 {single['p95_ms']:.1f} ms (target <= {TARGETS['p95_ms']:.0f}: "
            f"{verdict(single['p95_ms'], TARGETS['p95_ms'], False)}), max {single['max_ms']:.1f} ms"
        )
    if load:
        p50 = f", p50 {load['load_p50_ms']:.1f} ms, p95 {load['load_p95_ms']:.1f} ms" if load["requests"] else ""
        lines.append(
            f"{indent}{load['clients']} concurrent clients, {load['seconds']:.1f} s: {load['requests']} requests, "
            f"{load['errors']} errors, {load['rps']:.1f} requests/s (target >= {TARGETS['rps']:.0f}: "
            f"{verdict(load['rps'], TARGETS['rps'], True)}){p50}"
        )
    return lines


def dataset_report(result: DatasetResult, headline: str) -> list[str]:
    ds = result.dataset
    failed = f", failed: {result.failed}" if result.failed else ""
    lines = [
        f"== {ds.key}: {len(ds.passages)} passages, {len(result.questions)} of {len(ds.questions)} questions",
        f"  ingestion: {len(ds.passages)} files in {math.ceil(len(ds.passages) / UPLOAD_BATCH)} upload_docs requests, "
        f"{result.chunks} chunks, {result.ingest_s:.1f} s{failed}",
        f"  retrieval: search_docs top_k {EVAL_TOP_K}, score_threshold {THRESHOLD}, one request per question and mode",
        *mode_table(result, headline),
        source_note(result),
        f"  search_docs latency, hybrid, {result.chunks} chunks (targets are for the 2,000-chunk figure below):",
    ]
    hybrid = result.modes.get("hybrid")
    single = latency_stats(hybrid.latencies) if hybrid else {}
    return lines + latency_lines(single, result.load, "    ")


def latency_report(latency: dict) -> list[str]:
    failed = f", failed: {latency['failed']}" if latency["failed"] else ""
    return [
        f"== latency at {latency['chunks']} chunks: search_docs hybrid, top_k {README_TOP_K}, "
        f"score_threshold {THRESHOLD}",
        f"  knowledge base: {latency['files']} files (the passages, {latency['copies']} of them copies of SQuAD "
        f"passages named copyN_<name>), {latency['chunks']} chunks, built in {latency['build_s']:.1f} s{failed}",
        *latency_lines(latency, latency if "rps" in latency else {}),
    ]


def summary(results: list[DatasetResult], latency: dict, headline: str, wall: float) -> dict:
    out: dict = {"targets": TARGETS, "readme_mode": headline, "wall_s": round(wall, 1), "datasets": {}}
    for r in results:
        modes = {label: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.metrics().items()}
                 for label, m in r.modes.items()}  # fmt: skip
        hybrid = r.modes.get("hybrid")
        out["datasets"][r.dataset.key] = {
            "passages": len(r.dataset.passages), "questions": len(r.questions), "chunks": r.chunks,
            "ingest_s": round(r.ingest_s, 2), "failed_files": len(r.failed), "modes": modes,
            "hybrid_latency": rounded({**(latency_stats(hybrid.latencies) if hybrid else {}), **r.load}),
            "hit@3_pass": modes.get(headline, {}).get("hit@3", 0) >= TARGETS["hit@3"],
        }  # fmt: skip
    if latency:
        out["latency"] = rounded({k: v for k, v in latency.items() if k not in ("failed", "kb")})
        out["latency_pass"] = {
            "p50": latency["p50_ms"] <= TARGETS["p50_ms"],
            "p95": latency["p95_ms"] <= TARGETS["p95_ms"],
            "rps": latency.get("rps", 0) >= TARGETS["rps"],
        }
    return out


def rounded(values: dict) -> dict:
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in values.items()}


def print_report(results: list[DatasetResult], latency: dict, headline: str) -> None:
    print(f"README figure: hit@3 of the default mode ({headline}); targets: hit@3 >= {TARGETS['hit@3']} per set,")
    print(
        f"  hybrid search_docs at 2,000 chunks: p50 <= {TARGETS['p50_ms']:.0f} ms, p95 <= {TARGETS['p95_ms']:.0f} ms, "
        f">= {TARGETS['rps']:.0f} requests/s with 8 concurrent clients"
    )
    for result in results:
        print()
        print("\n".join(dataset_report(result, headline)))
    if latency:
        print()
        print("\n".join(latency_report(latency)))
    print()


# ---- main ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="cmrc,squad", help="comma-separated, from: cmrc, squad (default: both)")
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL_DIR, help=f"default: {DEFAULT_EVAL_DIR}")
    parser.add_argument("--limit", type=int, default=0, metavar="N", help="ask only the first N questions of each set")
    parser.add_argument(
        "--latency-chunks", type=int, default=2000, metavar="N",
        help="size of the separate latency knowledge base (default 2000; 0 skips it)",
    )  # fmt: skip
    parser.add_argument("--latency-queries", type=int, default=300, help="one-client queries there (default 300)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients for requests/s (default 8)")
    parser.add_argument(
        "--load-seconds", type=float, default=10.0, help="seconds of concurrent load per knowledge base (0: none)"
    )
    parser.add_argument(
        "--reranker-model", default="",
        help="cross-encoder folder (path, or name under MODEL_ROOT_PATH): adds a hybrid+rerank row "
        "(also added when USE_RERANKER is set, with RERANKER_MODEL)",
    )  # fmt: skip
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="KEY=VALUE",
        help="extra environment for the API server, repeatable (e.g. CHATCHAT_HYBRID_CANDIDATES=30)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print only the one-line JSON summary on stdout")
    return parser


def parse_datasets(raw: str, parser: argparse.ArgumentParser) -> list[str]:
    keys = [key.strip() for key in raw.split(",") if key.strip()]
    unknown = [key for key in keys if key not in DATASET_FILES]
    if unknown or not keys:
        parser.error(f"--datasets: use cmrc and/or squad, not {raw!r}")
    return list(dict.fromkeys(keys))


def parse_env(pairs: list[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    bad = [pair for pair in pairs if "=" not in pair or not pair.split("=", 1)[0]]
    if bad:
        parser.error(f"--server-env: expected KEY=VALUE, got {bad[0]!r}")
    return dict(pair.split("=", 1) for pair in pairs)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    keys = parse_datasets(args.datasets, parser)
    args.server_env = parse_env(args.server_env, parser)
    eval_dir = args.eval_dir.resolve()
    available = [key for key in DATASET_FILES if (eval_dir / DATASET_FILES[key]).is_file()]
    missing = [key for key in keys if key not in available]
    if missing:
        parser.error(f"{eval_dir} has no {', '.join(DATASET_FILES[k] for k in missing)}")
    loaded = {key: load_dataset(eval_dir, key) for key in available}
    started = time.perf_counter()
    data_root = Path(tempfile.mkdtemp(prefix="bench_retrieval_"))
    try:
        results, latency = run_all(data_root, [loaded[k] for k in keys], list(loaded.values()), args)
    finally:
        shutil.rmtree(data_root, ignore_errors=True)
    headline = headline_mode(results)
    if not args.json:
        if args.server_env:
            print(f"server environment: {' '.join(f'{k}={v}' for k, v in args.server_env.items())}")
        print_report(results, latency, headline)
    out = summary(results, latency, headline, time.perf_counter() - started)
    print(json.dumps({**out, "server_env": args.server_env}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
