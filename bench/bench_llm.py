"""LLM serving benchmark: tokens/s and time to first token through the OpenAI gateway, and the gateway's overhead.

    python bench/bench_llm.py                          # starts its own stack (default model) on free ports
    python bench/bench_llm.py --gateway http://127.0.0.1:20000 --worker http://127.0.0.1:20002

Measures, for the default model (or --model):
- one streamed request at a time: time to first token (TTFT), generation tokens/s;
- 8 concurrent streamed requests: aggregate tokens/s, median and worst TTFT;
- the gateway's own overhead: the same 1-token greedy request sent to the worker directly
  (``/worker_generate``) and through ``/v1/chat/completions``, interleaved; the median difference.
Completion tokens are counted with the model's tokenizer (streamed deltas can hold several tokens).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PROMPTS = [
    "Explain in a few sentences why the sky is blue.",
    "Write a short paragraph about the history of Paris.",
    "Give three tips for writing clean Python code.",
    "Describe how a bicycle works.",
    "What is a knowledge base and why is it useful?",
    "Summarise the plot of a story about a dragon and a knight.",
    "Why do people drink coffee in the morning?",
    "List some uses of a vector database.",
]


def load_tokenizer(model_name: str):
    from transformers import AutoTokenizer

    from server.model_workers.model_paths import hf_folder_for, resolve_local_model

    folder, gguf = hf_folder_for(resolve_local_model(model_name))
    return AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf)


async def stream_once(client, model: str, prompt: str, max_tokens: int) -> tuple[float, float, str]:
    """(seconds to first token, total seconds, text)."""
    started = time.perf_counter()
    first = None
    text = []
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0.7,
        stream=True,
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter() - started
            text.append(chunk.choices[0].delta.content)
    total = time.perf_counter() - started
    return (first if first is not None else total), total, "".join(text)


async def bench_streams(base_url: str, model: str, tokenizer, max_tokens: int, runs: int, concurrency: int):
    import openai

    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="EMPTY", timeout=600, max_retries=0)
    try:
        await stream_once(client, model, "Hello!", 4)  # warm up
        single = []
        for i in range(runs):
            single.append(await stream_once(client, model, PROMPTS[i % len(PROMPTS)], max_tokens))
        started = time.perf_counter()
        together = await asyncio.gather(
            *(stream_once(client, model, PROMPTS[i % len(PROMPTS)], max_tokens) for i in range(concurrency))
        )
        wall = time.perf_counter() - started
    finally:
        await client.close()

    def tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    single_rates = [tokens(t) / max(total - ttft, 1e-9) for ttft, total, t in single if tokens(t) > 1]
    return {
        "single": {
            "runs": runs,
            "ttft_median_ms": 1000 * statistics.median(r[0] for r in single),
            "tokens_per_s_median": statistics.median(single_rates) if single_rates else 0.0,
            "tokens_median": statistics.median(tokens(r[2]) for r in single),
        },
        "concurrent": {
            "requests": concurrency,
            "wall_s": wall,
            "aggregate_tokens_per_s": sum(tokens(r[2]) for r in together) / wall,
            "ttft_median_ms": 1000 * statistics.median(r[0] for r in together),
            "ttft_max_ms": 1000 * max(r[0] for r in together),
            "all_completed": all(r[2].strip() for r in together),
        },
    }


def bench_overhead(base_url: str, worker_url: str, model: str, runs: int) -> dict:
    import httpx

    messages = [{"role": "user", "content": "Say hi."}]
    with httpx.Client(timeout=300) as http:
        prompt = http.post(worker_url + "/worker_apply_chat_template", json={"messages": messages}).json()["prompt"]
        direct_params = {
            "model": model,
            "prompt": prompt,
            "messages": messages,
            "temperature": 0,
            "max_new_tokens": 1,
            "stop": [],
        }
        body = {"model": model, "messages": messages, "max_tokens": 1, "temperature": 0}
        direct, gateway = [], []
        for _ in range(3):  # warm up both paths
            http.post(worker_url + "/worker_generate", json=direct_params)
            http.post(base_url + "/v1/chat/completions", json=body)
        for _ in range(runs):
            started = time.perf_counter()
            http.post(worker_url + "/worker_generate", json=direct_params).raise_for_status()
            direct.append(time.perf_counter() - started)
            started = time.perf_counter()
            http.post(base_url + "/v1/chat/completions", json=body).raise_for_status()
            gateway.append(time.perf_counter() - started)
    return {
        "runs": runs,
        "direct_median_ms": 1000 * statistics.median(direct),
        "gateway_median_ms": 1000 * statistics.median(gateway),
        "overhead_median_ms": 1000 * statistics.median(g - d for g, d in zip(gateway, direct, strict=True)),
    }


def report(results: dict) -> None:
    s, c, o = results["single"], results["concurrent"], results["overhead"]
    print(f"model: {results['model']}  max_tokens: {results['max_tokens']}  device: {results.get('device', '?')}")
    print(
        f"single stream ({s['runs']} runs): TTFT {s['ttft_median_ms']:.0f} ms, "
        f"{s['tokens_per_s_median']:.1f} tokens/s (median of ~{s['tokens_median']:.0f} tokens)"
    )
    print(
        f"{c['requests']} concurrent streams: {c['aggregate_tokens_per_s']:.1f} tokens/s in total, "
        f"TTFT median {c['ttft_median_ms']:.0f} ms / worst {c['ttft_max_ms']:.0f} ms, "
        f"wall {c['wall_s']:.1f} s, all completed: {c['all_completed']}"
    )
    print(
        f"gateway overhead ({o['runs']} interleaved 1-token requests): direct {o['direct_median_ms']:.1f} ms, "
        f"through :20000 {o['gateway_median_ms']:.1f} ms, median difference {o['overhead_median_ms']:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", help="a running gateway (default: start a stack on free ports)")
    parser.add_argument("--worker", help="the model's worker URL, for the overhead measurement")
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--overhead-runs", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    tokenizer = load_tokenizer(args.model)

    def run(gateway: str, worker: str) -> dict:
        import httpx

        results = {"model": args.model, "max_tokens": args.max_tokens}
        results["device"] = httpx.get(worker + "/health", timeout=10).json().get("device")
        results.update(
            asyncio.run(bench_streams(gateway, args.model, tokenizer, args.max_tokens, args.runs, args.concurrency))
        )
        results["overhead"] = bench_overhead(gateway, worker, args.model, args.overhead_runs)
        return results

    if args.gateway:
        if not args.worker:
            parser.error("--worker is needed with --gateway")
        results = run(args.gateway.rstrip("/"), args.worker.rstrip("/"))
    else:
        from tests.helpers.stack import start_llm_stack

        with tempfile.TemporaryDirectory() as tmp, start_llm_stack(Path(tmp), model_name=args.model) as stack:
            results = run(stack.gateway_url, stack.worker_urls[args.model])
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
