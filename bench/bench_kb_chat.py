"""End-to-end knowledge-base chat benchmark: time to first token and total time per question,
split into retrieval, prompt building and generation.

    python bench/bench_kb_chat.py                 # starts controller, default model, gateway and API server
    python bench/bench_kb_chat.py --api-url http://127.0.0.1:7861 --gateway-url http://127.0.0.1:20000 \\
        --kb samples --model SmolLM2-135M-Instruct      # measure a running stack

Without URLs it builds a throw-away knowledge base from a folder (default: the Chatchat
sample documents in ../shared/corpus/chatchat-samples, text files only) and stops everything
at the end. For each question it measures:

- retrieval: ``/knowledge_base/search_docs`` (embedding the query + FAISS search, over HTTP);
- prompt: filling the knowledge_base_chat template with the retrieved chunks (in process);
- generation: the same prompt streamed straight from the gateway (first token, total);
- end to end: ``/chat/knowledge_base_chat`` streamed (first answer token, last event).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import httpx  # noqa: E402

DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "corpus" / "chatchat-samples"
TEXT_SUFFIXES = {".md", ".txt", ".csv", ".json", ".html", ".py", ".rst"}
QUESTIONS = [
    "什么是分布式训练中的数据并行？",
    "大模型推理优化有哪些常用策略？",
    "LoRA 微调的原理是什么？",
    "指令对齐训练包括哪些步骤？",
    "什么是检索增强生成（RAG）？",
]


@dataclass
class Timing:
    question: str
    retrieval: float
    prompt: float
    gen_first: float
    gen_total: float
    e2e_first: float
    e2e_total: float
    prompt_chars: int


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api-url", help="a running API server (else one is started)")
    parser.add_argument("--gateway-url", help="a running OpenAI-compatible gateway (else one is started)")
    parser.add_argument("--kb", default="bench_kb_chat", help="knowledge base to ask (built when the stack is ours)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="documents for the knowledge base")
    parser.add_argument("--model", default=None, help="model name (default: LLM_MODELS[0])")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1, help="times to ask the whole question set")
    args = parser.parse_args()

    from configs import get_settings

    model = args.model or get_settings().LLM_MODELS[0]
    with contextlib.ExitStack() as stack:
        api_url, gateway_url = args.api_url, args.gateway_url
        if not (api_url and gateway_url):
            api_url, gateway_url = stack.enter_context(own_stack(model, args.kb, args.corpus))
        run(api_url, gateway_url, args.kb, model, args.top_k, args.max_tokens, args.rounds)


@contextlib.contextmanager
def own_stack(model: str, kb_name: str, corpus: Path):
    """The LLM stack (controller, workers, gateway) and an API server on free ports, with a fresh data root."""
    from tests.helpers.api_server import start_api_server
    from tests.helpers.stack import start_llm_stack

    root = Path(tempfile.mkdtemp(prefix="bench_kb_chat_"))
    started = time.perf_counter()
    with start_llm_stack(root / "llm", model_name=model) as llm, start_api_server(root / "api", **llm.env) as api:
        print(f"stack up in {time.perf_counter() - started:.1f}s (logs: {llm.log_dir}, {api.log_path})")
        build_kb(api.url, kb_name, corpus)
        yield api.url, llm.gateway_url


def build_kb(api: str, kb_name: str, corpus: Path) -> None:
    files = sorted(p for p in corpus.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise SystemExit(f"no text documents under {corpus}")
    started = time.perf_counter()
    httpx.post(f"{api}/knowledge_base/create_knowledge_base", json={"knowledge_base_name": kb_name}, timeout=300)
    uploads = [("files", (str(p.relative_to(corpus)), p.read_bytes(), "text/plain")) for p in files]
    body = httpx.post(
        f"{api}/knowledge_base/upload_docs",
        data={"knowledge_base_name": kb_name, "override": "true"},
        files=uploads,
        timeout=1800,
    ).json()
    failed = body.get("data", {}).get("failed_files") or {}
    print(
        f"knowledge base {kb_name}: {len(files) - len(failed)} files ingested in {time.perf_counter() - started:.1f}s"
    )


# ---- measurements ------------------------------------------------------------------------------------------


def run(api: str, gateway: str, kb: str, model: str, top_k: int, max_tokens: int, rounds: int) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{gateway}/v1", api_key="EMPTY", timeout=600)
    measure(api, client, kb, model, QUESTIONS[0], top_k, max_tokens)  # warm-up: loads the embedding model
    timings = [
        measure(api, client, kb, model, question, top_k, max_tokens) for _ in range(rounds) for question in QUESTIONS
    ]
    report(timings, model, top_k, max_tokens)


def measure(api: str, client, kb: str, model: str, question: str, top_k: int, max_tokens: int) -> Timing:
    from configs import get_settings
    from server.chat.retrieval import build_prompt

    started = time.perf_counter()
    hits = httpx.post(
        f"{api}/knowledge_base/search_docs",
        json={"query": question, "knowledge_base_name": kb, "top_k": top_k},
        timeout=300,
    ).json()
    retrieval = time.perf_counter() - started

    started = time.perf_counter()
    template = get_settings().PROMPT_TEMPLATES["knowledge_base_chat"]["default"]
    prompt = build_prompt(template, question, "\n".join(hit["page_content"] for hit in hits))
    prompt_seconds = time.perf_counter() - started

    gen_first, gen_total = stream_gateway(client, model, prompt, max_tokens)
    e2e_first, e2e_total = stream_kb_chat(api, kb, model, question, top_k, max_tokens)
    return Timing(question, retrieval, prompt_seconds, gen_first, gen_total, e2e_first, e2e_total, len(prompt))


def stream_gateway(client, model: str, prompt: str, max_tokens: int) -> tuple[float, float]:
    started = time.perf_counter()
    first = None
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
    )
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    return (first if first is not None else total), total


def stream_kb_chat(api: str, kb: str, model: str, question: str, top_k: int, max_tokens: int) -> tuple[float, float]:
    payload = {
        "query": question,
        "knowledge_base_name": kb,
        "top_k": top_k,
        "stream": True,
        "model_name": model,
        "temperature": 0.0,
        "max_tokens": max_tokens,
    }
    started = time.perf_counter()
    first = None
    with httpx.stream("POST", f"{api}/chat/knowledge_base_chat", json=payload, timeout=600) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and first is None and '"answer"' in line:
                first = time.perf_counter() - started
    total = time.perf_counter() - started
    return (first if first is not None else total), total


def report(timings: list[Timing], model: str, top_k: int, max_tokens: int) -> None:
    print(f"\nmodel {model}, top_k {top_k}, max_tokens {max_tokens}, {len(timings)} questions (seconds)")
    for number, question in enumerate(QUESTIONS, start=1):
        print(f"  Q{number}: {question}")
    header = (
        f"{'question':<10} {'retrieve':>8} {'prompt':>8} {'gen 1st':>8} {'gen all':>8} {'e2e 1st':>8} {'e2e all':>8}"
    )
    print(header)
    for t in timings:
        print(
            f"{'Q' + str(QUESTIONS.index(t.question) + 1):<10} {t.retrieval:8.3f} {t.prompt:8.5f} {t.gen_first:8.2f} {t.gen_total:8.2f} "
            f"{t.e2e_first:8.2f} {t.e2e_total:8.2f}"
        )
    for label, pick in (("median", statistics.median), ("mean", statistics.fmean)):
        print(
            f"{label:<10} {pick(t.retrieval for t in timings):8.3f} {pick(t.prompt for t in timings):8.5f} "
            f"{pick(t.gen_first for t in timings):8.2f} {pick(t.gen_total for t in timings):8.2f} "
            f"{pick(t.e2e_first for t in timings):8.2f} {pick(t.e2e_total for t in timings):8.2f}"
        )
    overhead = statistics.median(t.e2e_first - t.gen_first - t.retrieval for t in timings)
    print(f"API overhead before the first token (e2e 1st - retrieval - gen 1st, median): {overhead:.3f}s")


if __name__ == "__main__":
    main()
