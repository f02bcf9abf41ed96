"""Knowledge-base answers of local chat models, compared: does the answer hold the fact, in the
question's language, and how long did it take. No server: the models run in this process, with
the worker's own loading and chat-template code, greedy (so runs are repeatable).

    python bench/bench_llm_quality.py                               # the packaged SmolLM2-135M
    python bench/bench_llm_quality.py SmolLM2-135M-Instruct /path/to/gemma-3-270m-q4_k_m.gguf

A model is a name the worker knows (LLM_MODELS, MODEL_ROOT_PATH, packaged) or a path to a model
folder or .gguf file. The contexts are passages of the bundled samples knowledge base, filled into
the default knowledge_base_chat template exactly as /chat/knowledge_base_chat does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PORTS = (
    "- The web UI listens on port 8501. Open http://127.0.0.1:8501 in a browser.\n"
    "- The REST API listens on port 7861; its interactive documentation is at http://127.0.0.1:7861/docs.\n"
    "- The OpenAI-compatible gateway listens on port 20000."
)
FAQ = (
    "How do I rebuild all knowledge bases? Run python init_database.py --recreate-vs.\n"
    "How do I add only new files to a knowledge base? Run python init_database.py -i (increment)."
)
TROUBLE_ZH = (
    "## 端口被占用\n启动时提示端口被占用，说明已有程序在使用该端口。请关闭占用端口的程序，或在 configs/settings.yaml "
    "中修改对应服务的端口，例如 API_SERVER: {port: 7862}。\n"
    "## 上传的文件解析失败\n解析失败的文件会单独列出失败原因，其余文件照常入库。扫描版 PDF 和图片会通过 OCR 识别文字。"
    "文本文件支持 UTF-8、GBK、GB18030 和 UTF-16 编码。"
)
# (question, context, any of these in the answer counts as the fact)
CASES = [
    ("Which port does the web UI use?", PORTS, ["8501"]),
    ("Which port does the REST API listen on?", PORTS, ["7861"]),
    ("How do I rebuild all knowledge bases?", FAQ, ["--recreate-vs", "recreate-vs"]),
    ("Web UI 使用哪个端口？", PORTS, ["8501"]),
    ("扫描版 PDF 怎么处理？", TROUBLE_ZH, ["OCR"]),
    ("文本文件支持哪些编码？", TROUBLE_ZH, ["GBK", "GB18030", "UTF-16"]),
]


def load(spec: str):
    from configs import get_settings
    from server.model_workers.model_paths import LocalModel, resolve_local_model
    from server.model_workers.transformers_worker import load_tokenizer_and_model

    path = Path(spec).expanduser()
    if path.is_file():
        model = LocalModel(path.stem, path.parent, path.name)
    elif path.is_dir():
        model = LocalModel(path.name, path)
    else:
        model = resolve_local_model(spec, get_settings())
    return load_tokenizer_and_model(model, "cpu")


def render(tokenizer, prompt: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return f"user: {prompt}\nassistant:"  # the worker's fallback for models without a template


def is_chinese(text: str) -> bool:
    return sum("\u4e00" <= ch <= "\u9fff" for ch in text) >= 2


def main() -> None:
    import torch

    from configs.prompts import DEFAULT_PROMPT_TEMPLATES
    from server.chat.common import render_prompt

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=["SmolLM2-135M-Instruct"])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    template = DEFAULT_PROMPT_TEMPLATES["knowledge_base_chat"]["default"]
    for spec in args.models:
        started = time.perf_counter()
        tokenizer, model = load(spec)
        print(f"\n{spec}: loaded in {time.perf_counter() - started:.1f} s")
        facts = language = tokens = 0
        seconds = 0.0
        for question, context, expected in CASES:
            prompt = render(tokenizer, render_prompt(template, context=context, question=question))
            ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
            started = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(ids, max_new_tokens=args.max_new_tokens, do_sample=False)
            seconds += time.perf_counter() - started
            new = out[0][ids.shape[1] :]
            tokens += len(new)
            answer = tokenizer.decode(new, skip_special_tokens=True).strip()
            has_fact = any(e.lower() in answer.lower() for e in expected)
            right_language = is_chinese(answer) == is_chinese(question)
            facts += has_fact
            language += right_language
            mark = ("fact" if has_fact else "----") + (" lang" if right_language else " ----")
            print(f"  [{mark}] {question} -> {answer[:100]!r}")
        n = len(CASES)
        print(f"  facts {facts}/{n}, question's language {language}/{n}, {tokens} tokens in {seconds:.1f} s")


if __name__ == "__main__":
    main()
