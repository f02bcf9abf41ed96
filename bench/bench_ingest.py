"""Ingestion benchmark: how fast a folder of documents becomes a searchable knowledge base.

    python bench/bench_ingest.py                       # the bundled samples
    python bench/bench_ingest.py ../shared/corpus/chatchat-samples --workers 2
    python bench/bench_ingest.py ../shared/corpus/chatchat-samples --compare   # against --plain
    python bench/bench_ingest.py --generate 1000       # 1,000 generated ~2 KB markdown files
    python bench/bench_ingest.py ../shared/corpus/chatchat-samples --warm-cold  # ingest cache: cold vs warm

Copies the folder into a throw-away knowledge-base root, runs the same code path as
`init_database.py --recreate-vs`, and prints files, chunks, seconds, chunks/s, peak RSS
(this process and its parse workers) and the time spent loading/OCR, splitting and embedding.
Load and split times are summed over worker processes, so they can exceed wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class PeakRss:
    """Samples the resident memory of this process plus its children while the run lasts, and of this
    process alone, so that growth in the ingesting process can be told from the parse workers' size."""

    def __init__(self, interval: float = 0.1):
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self.peak = 0
        self.own_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                own = self._process.memory_info().rss
                total = own + sum(child.memory_info().rss for child in self._process.children(recursive=True))
            except Exception:
                continue
            self.peak = max(self.peak, total)
            self.own_peak = max(self.own_peak, own)
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
    parser.add_argument(
        "--generate",
        type=int,
        metavar="N",
        help="ingest N generated markdown files (~2 KB, Chinese and English, some paragraphs repeated) "
        "instead of a folder, with an empty ingest cache",
    )
    parser.add_argument(
        "--warm-cold",
        action="store_true",
        help="time `init_database.py --recreate-vs` of the folder twice, with an empty then a filled ingest "
        "cache, and check that both give the same chunks and search results",
    )
    parser.add_argument("--snapshot", metavar="KB_ROOT", help=argparse.SUPPRESS)  # used by --warm-cold
    args = parser.parse_args()
    if args.compare:
        compare(args)
        return
    if args.snapshot:
        print(json.dumps(snapshot(args.snapshot), ensure_ascii=False))
        return
    if args.warm_cold:
        warm_cold(Path(args.folder).resolve())
        return
    if args.plain:
        os.environ["CHATCHAT_OCR_BACKEND"] = "onnxruntime"
        os.environ["CHATCHAT_EMBEDDING_DTYPE"] = "float32"
        os.environ["CHATCHAT_EMBEDDING_BATCH_SIZE"] = "64"
        from server.knowledge_base.embeddings.background import BackgroundEmbedder

        BackgroundEmbedder.MAX_REMEMBERED = 0

    root = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    if args.generate:
        source = root / "bench" / "content"
        generate(source, args.generate)
    else:
        source = Path(args.folder).resolve()
        if not source.is_dir():
            parser.error(f"{source} is not a folder")
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
    print(
        f"peak RSS        {rss.peak / 2**20:.0f} MiB with the parse workers, {rss.own_peak / 2**20:.0f} MiB this process"
    )
    print(f"load+OCR        {report.load_seconds:.1f} s (summed over workers)")
    print(f"split           {report.split_seconds:.1f} s (summed over workers)")
    print(f"embed           {report.embed_seconds:.1f} s (in a thread beside parsing)")
    print(f"files/s         {len(report.files) / total:.1f}")
    print(f"model           {report.model_seconds:.1f} s in the embedding model itself")
    print(
        f"embedding share {report.model_seconds / total:.0%} of the wall time (total/model x{total / max(report.model_seconds, 1e-9):.2f})"
    )
    print(f"reused          {report.reused_chunks} repeated chunks, {report.cached_chunks} from the ingest cache")
    if report.duplicates:
        print(f"duplicates      {len(report.duplicates)} files with the same content as another, ingested once")
    for name, reason in report.failed.items():
        print(f"failed          {name}: {reason}")
    if args.keep:
        print(f"kept at         {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


def compare(args) -> None:
    """Each configuration in its own process, so neither inherits the other's loaded models."""
    import re

    base = [sys.executable, __file__, args.folder] + (["--workers", str(args.workers)] if args.workers else [])
    seconds = {}
    for label, extra in (("baseline (--plain)", ["--plain"]), ("default", [])):
        print(f"== {label}", flush=True)
        output = subprocess.run(base + extra, check=True, capture_output=True, text=True).stdout
        print(output, end="", flush=True)
        seconds[label] = float(re.search(r"^seconds\s+([\d.]+)", output, re.M).group(1))
    plain, default = seconds.values()
    print(f"== speed-up      x{plain / default:.2f} ({plain:.1f} s -> {default:.1f} s)")


# ---- generated corpus ------------------------------------------------------------------------------

EN_WORDS = [
    "warehouse",
    "depot",
    "truck",
    "driver",
    "manager",
    "invoice",
    "shipment",
    "pallet",
    "forklift",
    "schedule",
    "inventory",
    "customer",
    "order",
    "delivery",
    "route",
    "safety",
    "helmet",
    "loading",
    "bay",
    "morning",
    "evening",
    "weekly",
    "report",
    "audit",
    "supplier",
    "contract",
    "price",
    "discount",
    "return",
    "policy",
    "holiday",
    "overtime",
    "training",
    "certificate",
]
ZH_PHRASES = [
    "仓库",
    "管理",
    "运输",
    "司机",
    "订单",
    "发货",
    "托盘",
    "叉车",
    "排班",
    "库存",
    "客户",
    "配送",
    "路线",
    "安全",
    "头盔",
    "装卸",
    "区域",
    "上午",
    "下午",
    "每周",
    "报告",
    "审计",
    "供应商",
    "合同",
    "价格",
    "折扣",
    "退货",
    "政策",
    "假期",
    "加班",
    "培训",
    "证书",
    "系统",
    "设置",
    "文件",
    "知识库",
]


def _sentence(rng: random.Random) -> str:
    if rng.random() < 0.5:
        words = rng.choices(EN_WORDS, k=rng.randint(8, 16))
        return " ".join(words).capitalize() + "."
    return "".join(rng.choices(ZH_PHRASES, k=rng.randint(6, 12))) + "。"


def _paragraph(rng: random.Random) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(3, 5)))


def generate(folder: Path, count: int, seed: int = 11) -> None:
    """``count`` markdown files of about 2 KB; a third of them carry one of 20 shared boilerplate paragraphs."""
    rng = random.Random(seed)
    boilerplate = [_paragraph(rng) for _ in range(20)]
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        parts = [f"# Document {index} 文档 {index}"]
        while len("\n\n".join(parts).encode()) < 1900:
            parts.append(_paragraph(rng) if rng.random() > 0.1 else rng.choice(boilerplate))
        if index % 3 == 0:
            parts.append(rng.choice(boilerplate))
        (folder / f"doc_{index:05d}.md").write_text("\n\n".join(parts) + "\n", encoding="utf-8")


# ---- warm and cold rebuilds ------------------------------------------------------------------------

QUERIES = ["如何安装", "支持哪些模型", "how to start the API server", "知识库问答", "向量库", "LLM", "报错", "GPU"]


def snapshot(kb_root: str) -> dict:
    """The knowledge base "bench" as a user sees it: every chunk, and the results of fixed queries."""
    os.environ["CHATCHAT_KB_ROOT_PATH"] = kb_root
    from server.knowledge_base import service

    chunks = sorted(
        (name, c.page_content, json.dumps(c.metadata, sort_keys=True, ensure_ascii=False))
        for name in service.list_files("bench")
        for c in service.list_docs("bench", name)
    )
    results = {
        query: [
            (h.chunk.metadata["source"], h.chunk.page_content, round(h.score, 4))
            for h in service.search("bench", query, 5)
        ]
        for query in QUERIES
    }
    return {"chunks": chunks, "results": results}


def _timed_rebuild(root: Path) -> tuple[float, str]:
    """Seconds of `init_database.py --recreate-vs`, as a user runs it, and its summary line."""
    env = {**os.environ, "CHATCHAT_KB_ROOT_PATH": str(root)}
    command = [sys.executable, str(REPO_ROOT / "init_database.py"), "--recreate-vs", "-n", "bench", "-q"]
    started = time.perf_counter()
    output = subprocess.run(command, check=True, env=env, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - started
    return seconds, next((line.strip() for line in output.splitlines() if line.strip().startswith("bench")), "")


def warm_cold(source: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-warm-cold-"))
    shutil.copytree(source, root / "bench" / "content")
    take = [sys.executable, __file__, "--snapshot", str(root)]
    try:
        cold, cold_summary = _timed_rebuild(root)
        cold_view = json.loads(subprocess.run(take, check=True, capture_output=True, text=True).stdout)
        cache_size = (root / "ingest_cache.db").stat().st_size
        warm, warm_summary = _timed_rebuild(root)
        warm_view = json.loads(subprocess.run(take, check=True, capture_output=True, text=True).stdout)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"folder          {source}")
    print(f"chunks          {len(cold_view['chunks'])} cold, {len(warm_view['chunks'])} warm")
    print(f"cold rebuild    {cold:.1f} s (empty ingest cache; process start and model load included)")
    print(f"                {cold_summary}")
    print(f"warm rebuild    {warm:.1f} s (ingest cache of {cache_size / 2**20:.1f} MiB)")
    print(f"                {warm_summary}")
    print(f"speed-up        x{cold / warm:.1f}")
    print(f"same chunks     {cold_view['chunks'] == warm_view['chunks']}")
    print(f"same results    {cold_view['results'] == warm_view['results']} ({len(QUERIES)} queries, top 5)")


if __name__ == "__main__":
    main()
