"""Measure retrieval on your own questions, with no LLM: hit@1/3/5, MRR and recall@k per search mode.

The questions file is JSON Lines or CSV (UTF-8); each question names the file its answer is in
and/or a piece of text the right chunk contains:
  {"question": "默认的 Web UI 端口是多少？", "expected_file": "quickstart.md"}
  {"question": "Which port does the API use?", "expected_text": "7861"}
CSV: a header row with question, expected_file, expected_text.

Examples:
  python evaluate_retrieval.py -n samples questions.jsonl
  python evaluate_retrieval.py -n samples questions.csv --modes keyword,hybrid --top-k 3 --json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

METRICS = ("hit@1", "hit@3", "hit@5", "mrr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("questions", type=Path, help="questions file (.jsonl or .csv)")
    parser.add_argument("-n", "--kb-name", required=True, metavar="KB", help="knowledge base to search")
    parser.add_argument(
        "--modes",
        default="",
        help="comma-separated: vector,keyword,hybrid,hybrid+rerank (default: the first three, "
        "plus hybrid+rerank when USE_RERANKER is on)",
    )
    parser.add_argument("--top-k", type=int, default=5, help="chunks retrieved per question (default 5)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--show-misses", type=int, default=0, metavar="N", help="list up to N missed questions per mode"
    )
    return parser


def format_table(results: list[dict], top_k: int) -> str:
    columns = ["mode", *METRICS, f"recall@{top_k}", "mean_search_ms"]
    rows = [[str(r["mode"])] + ["-" if r.get(c) is None else f"{r[c]:.3f}" for c in columns[1:-1]]
            + [f"{r['mean_search_ms']:.1f}"] for r in results]  # fmt: skip
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from fastapi.exceptions import RequestValidationError

    from configs import get_settings
    from server.db.engine import create_tables
    from server.knowledge_base import api_service, service
    from server.knowledge_base.search.evaluation import QuestionsFileError, parse_questions

    create_tables()
    if not service.kb_exists(args.kb_name):
        print(f"error: knowledge base '{args.kb_name}' not found", file=sys.stderr)
        return 2
    limit = get_settings().MAX_EVAL_QUESTIONS_FILE_SIZE
    try:
        if args.questions.stat().st_size > limit:
            raise QuestionsFileError(f"larger than MAX_EVAL_QUESTIONS_FILE_SIZE ({limit} bytes)")
        questions = parse_questions(args.questions.read_bytes(), args.questions.name)
        modes = api_service.parse_eval_modes(args.modes)
    except (OSError, QuestionsFileError) as exc:
        print(f"error: {args.questions}: {exc}", file=sys.stderr)
        return 2
    except RequestValidationError as exc:  # an unknown mode (a 422 for the API)
        print(f"error: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    results = api_service.evaluate_retrieval(args.kb_name, questions, modes, args.top_k)
    if args.json:
        print(json.dumps({"top_k": args.top_k, "questions": len(questions), "results": results}, ensure_ascii=False))
        return 0
    print(f"{args.kb_name}: {len(questions)} questions, top_k {args.top_k}\n")
    print(format_table(results, args.top_k))
    for result in results if args.show_misses else []:
        for question in result["misses"][: args.show_misses]:
            print(f"  missed ({result['mode']}): {question}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
