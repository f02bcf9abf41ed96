"""A model worker process whose model is scripted: the real TransformersWorker, serving a backend
that streams a fixed text word by word. For tests of what the worker does with a model's output.

    python -m tests.model_workers.scripted_worker --model-name looping --port P \\
        --controller-address URL --script-file reply.txt --record-file produced.txt

``--record-file`` receives, when a generation ends, how many words the backend produced: a
guard that ends a stream must also stop the generation, not only hide its output.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from server.model_workers.base import configure_logging, serve
from server.model_workers.model_paths import LocalModel
from server.model_workers.transformers_worker import GenerationRequest, TransformersWorker


class ScriptedBackend:
    name = "scripted"
    tokenizer = None  # the worker then renders chats as "role: content" lines
    context_len = 4096
    device = "cpu"

    def __init__(self, model: LocalModel, script: str, record_file: Path):
        self.model_info = model
        self.words = script.split(" ")
        self.record_file = record_file

    def encode(self, text: str, chat: bool) -> list[int]:
        return list(range(len(text.split())))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[tuple[str, int, int, str | None]]:
        prompt_tokens = len(self.encode(request.prompt, request.chat))
        produced = 0
        text = ""
        try:
            for word in self.words[: request.max_new_tokens]:
                text = f"{text} {word}" if text else word
                produced += 1
                yield text, prompt_tokens, produced, None
                await asyncio.sleep(0.002)  # a real model takes time per token
        finally:
            self.record_file.write_text(str(produced))
        yield text, prompt_tokens, produced, "length" if produced >= request.max_new_tokens else "stop"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--controller-address", required=True)
    parser.add_argument("--script-file", type=Path, required=True)
    parser.add_argument("--record-file", type=Path, required=True)
    args = parser.parse_args()
    configure_logging("info")
    model = LocalModel(name=args.model_name, folder=args.script_file.parent)
    backend = ScriptedBackend(model, args.script_file.read_text(encoding="utf-8"), args.record_file)
    worker = TransformersWorker(
        model=model,
        device_setting="cpu",
        backend=backend,
        controller_addr=args.controller_address,
        worker_addr=f"http://127.0.0.1:{args.port}",
    )
    serve(worker, "127.0.0.1", args.port)


if __name__ == "__main__":
    main()
