"""Model worker for local Hugging Face chat models (transformers; optionally vLLM on CUDA).

    python -m server.model_workers.transformers_worker --model-name SmolLM2-135M-Instruct \\
        --port 20002 --controller-address http://127.0.0.1:20001

Serves any causal-LM folder under MODEL_ROOT_PATH by name, or the packaged GGUF default.
Prompts are rendered with the tokenizer's own chat template; tokens stream as they are
generated; temperature, top_p, top_k, max_new_tokens, stop strings and stop token ids are
honoured. ``device: auto`` picks CUDA (bf16, else fp16) when present, else CPU (fp32).
``infer_turbo: vllm`` in FSCHAT_MODEL_WORKERS serves the model with vLLM when it is installed
and CUDA is present, and falls back to transformers with a warning otherwise.

FastChat's stock ``model_worker`` cannot be used: it crashes at start with transformers 5
(``get_context_length`` reads ``rope_scaling["factor"]``), and it builds prompts from
FastChat's conversation templates rather than the model's own.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from transformers import StoppingCriteria

from server.devices import preferred_dtype, resolve_device
from server.model_workers.base import (
    ChatkbWorker,
    advertised_address,
    concurrency_limit,
    configure_logging,
    serve,
    settings_or_exit,
    worker_arg_parser,
)
from server.model_workers.model_paths import (
    LocalModel,
    ModelNotFound,
    cached_folder,
    configured_device,
    convert_gguf_to_cache,
    hf_folder_for,
    resolve_local_model,
)
from server.model_workers.repetition import RepetitionGuard

logger = logging.getLogger("chatkb.worker")

DEFAULT_CONTEXT = 2048


@dataclass
class GenerationRequest:
    prompt: str
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = -1
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    echo: bool = False
    chat: bool = False  # prompt already rendered by the chat template (no extra special tokens)

    @classmethod
    def from_params(cls, params: dict[str, Any], default_max_tokens: int) -> GenerationRequest:
        stop = params.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        max_new = params.get("max_new_tokens")
        return cls(
            prompt=params.get("prompt") or "",
            max_new_tokens=int(max_new) if max_new else default_max_tokens,
            temperature=float(params["temperature"]) if params.get("temperature") is not None else 0.7,
            top_p=float(params["top_p"]) if params.get("top_p") is not None else 1.0,
            top_k=int(params["top_k"]) if params.get("top_k") is not None else -1,
            repetition_penalty=float(params.get("repetition_penalty") or 1.0),
            stop=[s for s in stop if s],
            stop_token_ids=[int(t) for t in params.get("stop_token_ids") or []],
            echo=bool(params.get("echo")),
            chat="messages" in params,
        )


def _context_length(config, override: int | None) -> int:
    if override:
        return int(override)
    for attr in ("max_position_embeddings", "max_sequence_length", "seq_length", "n_positions"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    text_config = getattr(config, "text_config", None)
    if text_config is not None and text_config is not config:
        return _context_length(text_config, None)
    return DEFAULT_CONTEXT


def load_tokenizer_and_model(model: LocalModel, device: str):
    """(tokenizer, model) on ``device``; a GGUF model is converted to the cache on first load."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf_file = hf_folder_for(model)
    trust = gguf_file is None  # local folders may carry their own modelling code (ChatGLM3, ...)
    started = time.monotonic()
    # A first start converts the GGUF file, silent for a minute otherwise: say what is going on
    # (startup.py shows these lines, and the de-quantizing progress bar, while it waits).
    step = _conversion_steps(model.name) if gguf_file is not None else lambda text: None
    step("reading the tokenizer from the GGUF file")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file, trust_remote_code=trust)
    dtype = preferred_dtype(device)
    step("de-quantizing the weights")
    hf_model = AutoModelForCausalLM.from_pretrained(
        str(folder), gguf_file=gguf_file, dtype=dtype if gguf_file is None else torch.float32, trust_remote_code=trust
    )
    if gguf_file is not None and cached_folder(model) is None:
        step("saving the converted model, so later starts take a second")
        convert_gguf_to_cache(model, tokenizer, hf_model)
    hf_model = hf_model.to(device=device, dtype=dtype).eval()
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    logger.info("loaded %s from %s on %s (%s) in %.1fs", model.name, folder, device, dtype, time.monotonic() - started)
    return tokenizer, hf_model


def _conversion_steps(model_name: str):
    """A logger of numbered conversion steps ("step 1/3: ...") with the time since the first."""
    started = time.monotonic()
    count = 0
    logger.info("first start of %s: converting its GGUF file (about a minute on a laptop CPU)", model_name)

    def step(text: str) -> None:
        nonlocal count
        count += 1
        logger.info("converting %s, step %d/3 (%.0fs): %s", model_name, count, time.monotonic() - started, text)

    return step


class _Cancel(StoppingCriteria):
    """A stopping criterion flag: set it and generation ends after the current step."""

    def __init__(self):
        self.event = threading.Event()

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class TransformersBackend:
    name = "transformers"

    def __init__(self, model: LocalModel, device: str, max_context: int | None):
        self.model_info = model
        self.device = device
        self.tokenizer, self.model = load_tokenizer_and_model(model, device)
        self.context_len = _context_length(self.model.config, max_context)
        eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        eos_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
        if self.tokenizer.eos_token_id is not None:
            eos_ids.append(self.tokenizer.eos_token_id)
        self.eos_token_ids = sorted({int(t) for t in eos_ids})

    def encode(self, text: str, chat: bool) -> list[int]:
        return self.tokenizer(text, add_special_tokens=not chat).input_ids

    async def stream(self, request: GenerationRequest) -> AsyncIterator[tuple[str, int, int, str | None]]:
        """Yield (text so far, prompt tokens, completion tokens, finish reason or None)."""
        import torch
        from transformers import StoppingCriteriaList

        input_ids = self.encode(request.prompt, request.chat)
        prompt_tokens = len(input_ids)
        max_new = max(1, min(request.max_new_tokens, self.context_len - prompt_tokens))
        streamer = _CountingStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = _Cancel()
        kwargs: dict[str, Any] = {
            "input_ids": torch.tensor([input_ids], device=self.device),
            "attention_mask": torch.ones((1, prompt_tokens), dtype=torch.long, device=self.device),
            "max_new_tokens": max_new,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([cancel]),
            "eos_token_id": sorted({*self.eos_token_ids, *request.stop_token_ids}) or None,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if request.temperature > 1e-5:
            kwargs.update(do_sample=True, temperature=request.temperature, top_p=max(request.top_p, 1e-5))
            kwargs["top_k"] = request.top_k if request.top_k and request.top_k > 0 else None
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if request.repetition_penalty and request.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = request.repetition_penalty
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**kwargs)
            except BaseException as exc:  # reported to the consumer below
                failure.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, name="generate", daemon=True)
        thread.start()
        text = ""
        try:
            async for piece in streamer:
                text += piece
                yield text, prompt_tokens, streamer.generated, None
                if cancel.event.is_set():
                    break
        finally:
            cancel.event.set()  # the client went away or a stop string matched
        await asyncio.to_thread(thread.join)
        if failure:
            raise failure[0]
        finish = "length" if streamer.generated >= max_new and not streamer.saw_eos(self.eos_token_ids) else "stop"
        yield text, prompt_tokens, streamer.generated, finish

    def release(self) -> None:
        del self.model
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


try:
    from transformers import AsyncTextIteratorStreamer as _AsyncStreamer
except ImportError:  # pragma: no cover - transformers < 4.42
    _AsyncStreamer = object


class _CountingStreamer(_AsyncStreamer):
    """AsyncTextIteratorStreamer that also counts generated tokens and remembers the last one."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generated = 0
        self.last_token: int | None = None

    def put(self, value):
        if not (self.skip_prompt and self.next_tokens_are_prompt):
            flat = value.reshape(-1)
            self.generated += int(flat.numel())
            if flat.numel():
                self.last_token = int(flat[-1])
        super().put(value)

    def saw_eos(self, eos_ids: list[int]) -> bool:
        return self.last_token is not None and self.last_token in eos_ids


class VLLMBackend:  # pragma: no cover - needs CUDA and vllm, neither present on the test machines
    name = "vllm"

    def __init__(self, model: LocalModel, device: str, max_context: int | None):
        from transformers import AutoConfig, AutoTokenizer
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        folder, gguf_file = hf_folder_for(model)
        if gguf_file is not None:
            # vLLM reads Hugging Face folders; convert the GGUF once through transformers.
            load_tokenizer_and_model(model, "cpu")  # writes the conversion cache; the result is dropped
            folder, gguf_file = hf_folder_for(model)
            if gguf_file is not None:
                raise RuntimeError("vLLM needs a Hugging Face folder and the GGUF conversion cache is not writable")
        self.model_info = model
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=True)
        args = AsyncEngineArgs(
            model=str(folder), trust_remote_code=True, max_model_len=max_context, gpu_memory_utilization=0.85
        )
        self.engine = AsyncLLMEngine.from_engine_args(args)
        self.context_len = _context_length(AutoConfig.from_pretrained(str(folder), trust_remote_code=True), max_context)
        self.eos_token_ids = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []

    def encode(self, text: str, chat: bool) -> list[int]:
        return self.tokenizer(text, add_special_tokens=not chat).input_ids

    async def stream(self, request: GenerationRequest) -> AsyncIterator[tuple[str, int, int, str | None]]:
        from vllm import SamplingParams

        input_ids = self.encode(request.prompt, request.chat)
        sampling = SamplingParams(
            temperature=request.temperature,
            top_p=max(request.top_p, 1e-5),
            top_k=request.top_k if request.top_k and request.top_k > 0 else -1,
            max_tokens=max(1, min(request.max_new_tokens, self.context_len - len(input_ids))),
            stop_token_ids=request.stop_token_ids or None,
            repetition_penalty=request.repetition_penalty or 1.0,
        )
        request_id = uuid.uuid4().hex
        output = None
        try:
            async for output in self.engine.generate({"prompt_token_ids": input_ids}, sampling, request_id):
                completion = output.outputs[0]
                yield completion.text, len(input_ids), len(completion.token_ids), None
        finally:
            if output is None or not output.finished:
                await self.engine.abort(request_id)
        if output is not None:
            completion = output.outputs[0]
            yield completion.text, len(input_ids), len(completion.token_ids), completion.finish_reason or "stop"

    def release(self) -> None:
        del self.engine
        gc.collect()


def create_backend(model: LocalModel, device_setting: str, infer_turbo, max_context: int | None):
    device = resolve_device(device_setting)
    if infer_turbo == "vllm":
        if device.startswith("cuda") and importlib.util.find_spec("vllm") is not None:
            return VLLMBackend(model, device, max_context)
        logger.warning("infer_turbo=vllm needs CUDA and the vllm package; serving %s with transformers", model.name)
    return TransformersBackend(model, device, max_context)


def _partial_stop(text: str, stops: list[str]) -> int:
    """How many trailing characters of ``text`` could be the start of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                longest = max(longest, size)
                break
    return longest


class TransformersWorker(ChatkbWorker):
    def __init__(
        self, *, model: LocalModel, device_setting: str, infer_turbo=False, max_context=None, backend=None, **kwargs
    ):
        # ``backend`` lets tests serve a scripted model through the real worker.
        self.backend = backend or create_backend(model, device_setting, infer_turbo, max_context)
        super().__init__(model_names=[model.name], **kwargs)
        self.tokenizer = self.backend.tokenizer
        self.context_len = self.backend.context_len
        self.device = self.backend.device
        self._change_lock = asyncio.Lock()

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "llm",
            "device": self.backend.device,
            "backend": self.backend.name,
            "model_path": self.backend.model_info.display_path,
            "context_length": self.context_len,
        }

    def count_tokens(self, text: str) -> int:
        return len(self.backend.encode(text, chat=True))

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        tokenizer = self.backend.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:
            # Some templates (Gemma, Mistral) refuse a system role: fold it into the first user turn.
            system = "\n".join(m["content"] for m in messages if m["role"] == "system")
            rest = [m for m in messages if m["role"] != "system"]
            if system and rest and rest[0]["role"] == "user":
                rest[0] = {"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}
            return tokenizer.apply_chat_template(rest, tokenize=False, add_generation_prompt=True)

    async def generate_stream(self, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        from configs import get_settings

        settings = get_settings()
        request = GenerationRequest.from_params(params, settings.MAX_TOKENS or 1024)
        guard = RepetitionGuard(repeats=settings.REPETITION_GUARD_REPEATS)
        prefix = request.prompt if request.echo else ""
        sent = ""
        prompt_tokens = completion_tokens = 0
        finish: str | None = None
        async with aclosing(self.backend.stream(request)) as stream:
            async for text, prompt_tokens, completion_tokens, finish in stream:
                cut = min((i for i in (text.find(s) for s in request.stop) if i >= 0), default=-1)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
                elif finish is None:
                    text = text[: len(text) - _partial_stop(text, request.stop)] if request.stop else text
                if finish is None and text != sent and (loop := guard.check(text)) is not None:
                    # FastChat's protocol knows only "stop" and "length"; the log says why.
                    logger.warning(
                        "%s: ended a repeating answer after %d tokens (repeated: %r)",
                        self.model_names[0],
                        completion_tokens,
                        loop.unit[:80],
                    )
                    text, finish = text[: loop.keep], "stop"
                if finish is None and text == sent:
                    continue
                sent = text
                yield {
                    "text": prefix + text,
                    "error_code": 0,
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                    "finish_reason": finish,
                }
                if finish is not None:
                    return

    async def change_model(self, new_model_name: str) -> dict[str, Any]:
        from configs import get_settings

        settings = get_settings()
        if new_model_name in settings.ONLINE_LLM_MODEL:
            return {"code": 500, "msg": f"{new_model_name} is an online model; start a proxy worker for it"}
        try:
            model = resolve_local_model(new_model_name, settings)
        except ModelNotFound as exc:
            return {"code": 500, "msg": f"the model {new_model_name} is not available: {exc}"}
        async with self._change_lock:
            old_name = self.model_names[0]
            old_model = self.backend.model_info
            config = settings.worker_config(new_model_name)
            self.switching = True
            try:
                await asyncio.to_thread(self.unregister_from_controller)
                await asyncio.to_thread(self.wait_idle, 60.0)
                self.backend.release()
                try:
                    self.backend = await asyncio.to_thread(
                        create_backend,
                        model,
                        configured_device(new_model_name, settings),
                        config.infer_turbo,
                        config.max_context,
                    )
                except Exception as exc:
                    logger.exception("loading %s failed; reloading %s", new_model_name, old_name)
                    old_config = settings.worker_config(old_name)
                    self.backend = await asyncio.to_thread(
                        create_backend,
                        old_model,
                        configured_device(old_name, settings),
                        old_config.infer_turbo,
                        old_config.max_context,
                    )
                    return {"code": 500, "msg": f"failed change model from {old_name} to {new_model_name}: {exc}"}
                finally:
                    self.tokenizer = self.backend.tokenizer
                    self.context_len = self.backend.context_len
                    self.device = self.backend.device
                self.model_names = [new_model_name]
                return {"code": 200, "msg": f"success change model from {old_name} to {new_model_name}"}
            finally:
                self.switching = False
                await asyncio.to_thread(self.register_to_controller)


def main(argv: list[str] | None = None) -> None:
    settings = settings_or_exit()
    parser = worker_arg_parser("chatkb model worker for local Hugging Face / GGUF chat models", settings)
    parser.add_argument("--model-name", default=settings.LLM_MODELS[0] if settings.LLM_MODELS else None)
    parser.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N | mps (default: from settings)")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        model = resolve_local_model(args.model_name, settings)
    except ModelNotFound as exc:
        print(f"error: {exc}", flush=True)
        raise SystemExit(2)
    config = settings.worker_config(args.model_name)
    worker = TransformersWorker(
        model=model,
        device_setting=args.device or configured_device(args.model_name, settings),
        infer_turbo=config.infer_turbo,
        max_context=config.max_context,
        controller_addr=args.controller_address,
        worker_addr=advertised_address(args.host, args.port, args.controller_address, args.worker_address),
        limit_worker_concurrency=concurrency_limit(args.limit_worker_concurrency, args.model_name, settings),
    )
    serve(worker, args.host, args.port, args.log_level)


if __name__ == "__main__":
    main()
