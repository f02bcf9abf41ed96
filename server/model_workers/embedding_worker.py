"""Embeddings worker: serves ``/worker_get_embeddings`` so the gateway's ``/v1/embeddings`` works.

    python -m server.model_workers.embedding_worker --model-name all-MiniLM-L6-v2 --port 20003

Uses the same backends as the knowledge base (``server.knowledge_base.embeddings``): a local
sentence-transformers model, or an OpenAI-compatible endpoint from ONLINE_EMBEDDING_MODELS.
Vectors are L2-normalised, as the knowledge base stores them.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import numpy as np

from server.knowledge_base.embeddings import UnknownEmbeddingModel, get_embeddings
from server.model_workers.base import (
    ChatkbWorker,
    advertised_address,
    concurrency_limit,
    configure_logging,
    error_chunk,
    serve,
    settings_or_exit,
    worker_arg_parser,
)

logger = logging.getLogger("chatkb.worker")


class EmbeddingWorker(ChatkbWorker):
    def __init__(self, *, model_names: list[str], **kwargs):
        # Load every model before registering, so a bad name fails at start, not at the first request.
        self.backends = {name: get_embeddings(name) for name in model_names}
        super().__init__(model_names=model_names, **kwargs)
        first = self.backends[model_names[0]]
        self._tokenizer = getattr(getattr(first, "_model", None), "tokenizer", None)
        self.context_len = int(getattr(getattr(first, "_model", None), "max_seq_length", 0) or 512)
        self.device = str(getattr(first, "device", "remote"))

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "embeddings",
            "device": self.device,
            "dimensions": {n: b.dimension for n, b in self.backends.items()},
        }

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is not None:
            return len(self._tokenizer(text, add_special_tokens=False).input_ids)
        return max(1, len(text) // 3)

    async def get_embeddings_async(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params.get("model") or self.model_names[0]
        backend = self.backends.get(name)
        if backend is None:
            return error_chunk(f"this worker serves {self.model_names}, not {name}")
        texts = params.get("input") or []
        if isinstance(texts, str):
            texts = [texts]
        vectors = await asyncio.to_thread(backend.embed, [str(t) for t in texts])
        vectors = np.asarray(vectors, dtype=np.float32)
        if params.get("encoding_format") == "base64":
            embedding: list[Any] = [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in vectors]
        else:
            embedding = vectors.tolist()
        token_num = sum(await asyncio.to_thread(lambda: [self.count_tokens(str(t)) for t in texts]))
        return {"embedding": embedding, "token_num": token_num, "error_code": 0}


def main(argv: list[str] | None = None) -> None:
    settings = settings_or_exit()
    parser = worker_arg_parser("chatkb embeddings worker (/v1/embeddings through the gateway)", settings)
    parser.add_argument("--model-name", nargs="+", default=[settings.EMBEDDING_MODEL])
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        worker = EmbeddingWorker(
            model_names=args.model_name,
            controller_addr=args.controller_address,
            worker_addr=advertised_address(args.host, args.port, args.controller_address, args.worker_address),
            limit_worker_concurrency=concurrency_limit(args.limit_worker_concurrency, args.model_name[0], settings),
        )
    except UnknownEmbeddingModel as exc:
        print(f"error: {exc}", flush=True)
        raise SystemExit(2)
    serve(worker, args.host, args.port, args.log_level)


if __name__ == "__main__":
    main()
